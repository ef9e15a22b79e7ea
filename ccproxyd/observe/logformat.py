"""`--log-format json`: each log record as one JSON object on one line.

The object has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger` and `message`; a
record that carries `fields` (the access line) has them at the top level instead of a message; a
traceback is in `traceback`.  Every string is scrubbed of provider secrets before it is encoded,
and observe.Scrubbing scrubs the finished line again, as it does for the text format.
"""

from __future__ import annotations

import functools
import logging
import time

import orjson

from . import redact

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _clean(value):
    if isinstance(value, str):
        return redact.scrub(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                        + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(_clean(line), default=str).decode()


class TextFormatter(logging.Formatter):
    """TEXT, its time as logging's default writes it ("2026-12-07 06:30:00,123", local time), the
    seconds made once a second (a log line a request: localtime and strftime were a tenth of it)."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{_local_second(int(record.created))},{int(record.msecs):03d}"


@functools.lru_cache(maxsize=4)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()
