"""`ccproxyd prices --refresh`: OpenRouter's public models list -> the catalog's override file.

OpenRouter's GET /api/v1/models lists every model with `pricing` in USD per token, as strings
(`prompt`, `completion`, `input_cache_read`, `input_cache_write`, `input_cache_write_1h`,
`web_search` per search, …; "-1" where the price varies, as for its router; documented at
https://openrouter.ai/docs/client-sdks/python/components/pricing).  Each becomes a row of the override file's `openrouter`
section at USD per 1M tokens, dated now; a model whose price did not change keeps its old row,
so the file is a history.  Only when asked, never at start.  A bad or partial answer (not JSON,
no `data`, too many entries without prices, or far fewer models than the file already has)
changes nothing and says why.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import orjson
import yaml

from .catalog import CatalogError, build

URL = "https://openrouter.ai/api/v1/models"
SECTION = "openrouter"
HOSTS = ["openrouter.ai"]
PER_TOKENS = 1_000_000
FIELDS = {"prompt": "input", "completion": "output", "input_cache_read": "cached_input",
          "input_cache_write": "cache_write", "input_cache_write_1h": "cache_write_1h"}
MALFORMED_SHARE = 0.1        # more entries than this without a readable price: the answer is bad
SHRINK_SHARE = 0.5           # fewer models than this share of the file's: the answer is partial


class RefreshError(Exception):
    """The answer was not used; the message says why.  The old file is untouched."""


def rows_from(answer: bytes, since: str, source: str = URL) -> tuple[dict[str, dict], list[str]]:
    """OpenRouter's answer -> {model id: row} at USD per 1M tokens, and notes on skipped models."""
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise RefreshError(f"the answer is not JSON ({exc}): truncated or not OpenRouter's models list") from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RefreshError("the answer has no `data` list of models")
    rows, skipped, malformed = {}, [], 0
    for entry in entries:
        row = _row(entry, since, source) if isinstance(entry, dict) else None
        if row is None:
            malformed += 1
            continue
        if row == "variable":
            skipped.append(f"{entry['id']}: its price varies by request (-1); left out")
            continue
        rows[entry["id"]] = row
    if malformed > MALFORMED_SHARE * len(entries):
        raise RefreshError(f"{malformed} of {len(entries)} models have no readable id and price")
    if malformed:
        skipped.append(f"{malformed} entries without a readable id and price; left out")
    return rows, skipped


def _row(entry: dict, since: str, source: str) -> dict | str | None:
    model_id, pricing = entry.get("id"), entry.get("pricing")
    if not isinstance(model_id, str) or not model_id or not isinstance(pricing, dict):
        return None
    row: dict[str, Any] = {"since": since, "source": source}
    for theirs, ours in FIELDS.items():
        if theirs not in pricing:
            if theirs in ("prompt", "completion"):
                return None
            continue
        value = _number(pricing[theirs])
        if value is None:
            return None
        if value < 0:
            return "variable"
        row[ours] = round(value * PER_TOKENS, 6)
    search = _number(pricing.get("web_search", "0"))
    if search and search > 0:                           # "-1": varies; left out, the tokens still priced
        row["web_search_per_1k"] = round(search * 1000, 6)
    return row


def _number(value: Any) -> float | None:
    """A finite number, else None (NaN and infinity are no price)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def merge(old: dict | None, fresh: dict[str, dict]) -> dict:
    """The override file's new content: each model's old rows, plus the fresh row when its prices
    changed (a model OpenRouter no longer lists keeps its rows)."""
    section = (old or {}).get(SECTION) or {"hosts": HOSTS, "models": {}}
    models = {k: {"rows": list(v.get("rows") or [])} for k, v in (section.get("models") or {}).items()}
    for model_id, row in sorted(fresh.items()):
        rows = models.setdefault(model_id, {"rows": []})["rows"]
        if not rows or _prices(rows[-1]) != _prices(row):
            rows.append(row)
    out = dict(old or {})
    out[SECTION] = {"hosts": section.get("hosts") or HOSTS, "models": models}
    return out


def _prices(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("since", "source", "note")}


def refresh(answer: bytes, path: str, since: str, force: bool = False) -> tuple[int, int, list[str]]:
    """Write the override file from `answer`; returns (models listed, rows added, notes).
    Raises RefreshError (and writes nothing) when the answer is bad or partial."""
    fresh, notes = rows_from(answer, since)
    old = _read(path)
    before = len(((old or {}).get(SECTION) or {}).get("models") or {})
    if before and len(fresh) < SHRINK_SHARE * before and not force:
        raise RefreshError(f"the answer lists {len(fresh)} models, the file {before}: a partial answer? "
                           "(--force writes it anyway)")
    content = merge(old, fresh)
    try:
        build(content, path)                       # what the daemon will load must load
    except CatalogError as exc:
        raise RefreshError(f"the new file would not load: {exc.problems[0]}") from None
    added = sum(len(v["rows"]) for v in content[SECTION]["models"].values()) - sum(
        len(v.get("rows") or []) for v in (((old or {}).get(SECTION) or {}).get("models") or {}).values())
    _write(path, content)
    return len(fresh), added, notes


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RefreshError(f"cannot read the current override {path}: {exc}") from None
    return data if isinstance(data, dict) else None


def _write(path: str, content: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    header = (f"# ccproxyd price overrides, written by `ccproxyd prices --refresh` from {URL}.\n"
              "# Same shape as the packaged catalog (ccproxyd/data/prices.yaml); rows on top of it.\n")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".prices-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(header + yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
