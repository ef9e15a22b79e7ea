"""Wall-clock time for money and days (prices in force, time-of-day rates, budgets, the ledger's
UTC days).

`now()` is `time.time()`, unless CCPROXYD_NOW holds a UTC time (`2026-12-07T03:00:00Z`): then the
clock starts there when the process starts and runs on in real time.  Tests set it so that no
figure depends on when the test runs (a run across midnight, a peak hour); nothing else should.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time


def _start() -> float | None:
    text = os.environ.get("CCPROXYD_NOW", "").strip()
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


_PINNED = _start()
_MONOTONIC_AT_START = time.monotonic()


def now() -> float:
    if _PINNED is None:
        return time.time()
    return _PINNED + (time.monotonic() - _MONOTONIC_AT_START)


def day(at: float | None = None) -> str:
    """The UTC day of `at` (default: now), YYYY-MM-DD."""
    return _day(int((now() if at is None else at) // 86400))


@functools.lru_cache(maxsize=8)
def _day(number: int) -> str:
    """UTC day `number` since the epoch (the ledger writes one a request: strftime costs 3 µs)."""
    return time.strftime("%Y-%m-%d", time.gmtime(number * 86400))


def stamp(at: float) -> str:
    """`at` as UTC ISO 8601 to the second, YYYY-MM-DDTHH:MM:SSZ (an access line's `time`)."""
    return _stamp(int(at))


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    """Made once a second, not once a request (strftime is most of an access line's time field)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def today() -> dt.date:
    return dt.datetime.fromtimestamp(now(), dt.timezone.utc).date()
