"""Prices as data: rates per 1M tokens, long-context tiers, time-of-day windows, dated rows.

One vocabulary serves the packaged catalog, routes.yaml's `prices:` and `claude_prices:`:

    input, output            USD per 1M fresh input / output tokens
    cached_input             a cache read (hit); absent: billed as input
    cache_write              a cache write (the 5-minute lifetime, or the provider's only one); absent: as input
    cache_write_1h           a 1-hour cache write; absent: at cache_write
    web_search_per_1k        USD per 1,000 web searches the provider ran
    tiers                    [{up_to: N, <rates>}, …, {<rates>}]: the first tier whose up_to covers the
                             whole prompt (cached and written input included) prices every token
    windows                  [{days: [mon…], hours: ["01:00-04:00", …], <rates> or tiers}]: UTC; inside
                             a window its rates apply, outside it the row's own

`parse_row` turns one mapping into a `Row` and lists the problems it found with where they are,
so the routing table's loader can point at PATH:LINE:COL and the catalog's at the model id.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

RATE_KEYS = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "web_search_per_1k")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class Rates:
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    web_search_per_1k: float | None = None


@dataclass(frozen=True)
class Tier:
    up_to: int | None                    # prompt tokens this tier covers; None: no bound (the last)
    rates: Rates


@dataclass(frozen=True)
class Window:
    """A time of the week with its own rates (UTC): `spans` are [start, end) minutes of the day."""
    days: frozenset[int]                 # 0 = Monday
    spans: tuple[tuple[int, int], ...]
    tiers: tuple[Tier, ...]
    label: str                           # as written: "mon-fri 01:00-04:00,06:00-10:00"

    def holds(self, at: dt.datetime) -> bool:
        minute = at.hour * 60 + at.minute
        return at.weekday() in self.days and any(start <= minute < end for start, end in self.spans)


@dataclass(frozen=True)
class Row:
    """The prices of one model from `since` (UTC, epoch seconds; 0: always) until the next row's."""
    since: float
    source: str
    tiers: tuple[Tier, ...]
    windows: tuple[Window, ...] = ()
    note: str = ""

    def window_at(self, at: float) -> Window | None:
        if not self.windows:
            return None
        moment = dt.datetime.fromtimestamp(at, dt.timezone.utc)
        return next((w for w in self.windows if w.holds(moment)), None)

    @cached_property
    def since_text(self) -> str:
        return "always" if not self.since else _when(self.since)


@dataclass(frozen=True)
class Priced:
    """A model's prices over time, and where they come from (a catalog section or the table)."""
    model: str
    origin: str                          # catalog section ("openai", …) or "routes.yaml"
    rows: tuple[Row, ...]

    def row_at(self, at: float) -> Row | None:
        """The row in force at `at`; None before the first (an unknown price, not a guess)."""
        found = None
        for row in self.rows:
            if row.since <= at:
                found = row
        return found


Problems = list[tuple[tuple, str]]      # (where, relative to the row; message)


def parse_row(raw: Any, *, dated: bool) -> tuple[Row | None, Problems]:
    """One row.  `dated`: the catalog's rows must say `since` and `source`; the routing table's may."""
    problems: Problems = []
    if not isinstance(raw, dict):
        return None, [((), "must be a mapping of rates")]
    since = 0.0
    if "since" in raw:
        since = _since(raw["since"], problems)
    elif dated:
        problems.append(((), "needs `since`: the UTC date the price took effect"))
    source = raw.get("source")
    if source is not None and not (isinstance(source, str) and source.strip()):
        problems.append((("source",), "must be text: where the price comes from"))
    elif dated and not source:
        problems.append(((), "needs `source`: where the price comes from (a URL)"))
    tiers = _tiers_of(raw, (), problems)
    windows = []
    for i, window in enumerate(raw.get("windows") or ()):
        parsed = _window(window, ("windows", i), problems)
        if parsed is not None:
            windows.append(parsed)
    if problems:
        return None, problems
    return Row(since=since, source=str(source or ""), tiers=tiers, windows=tuple(windows),
               note=str(raw.get("note") or "")), problems


def parse_prices(raw: Any, *, model: str, origin: str, source: str) -> tuple[Priced | None, Problems]:
    """routes.yaml's `prices:` (and each `claude_prices:` entry): a list of tiers (the original
    form) or one row mapping (with `tiers`, `windows`, and optionally `since` and `source`)."""
    if isinstance(raw, list):
        raw = {"tiers": raw}
    row, problems = parse_row(raw, dated=False)
    if row is None:
        return None, problems
    if not row.source:
        row = Row(since=row.since, source=source, tiers=row.tiers, windows=row.windows, note=row.note)
    return Priced(model=model, origin=origin, rows=(row,)), problems


def _since(value: Any, problems: Problems) -> float:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            problems.append((("since",), f"'{value}' is not a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM:SSZ)"))
            return 0.0
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
    else:
        problems.append((("since",), "must be a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM:SSZ)"))
        return 0.0
    return moment.timestamp()


def _tiers_of(raw: dict, where: tuple, problems: Problems) -> tuple[Tier, ...]:
    """`tiers:`, or the rate keys written directly (one tier)."""
    if "tiers" in raw:
        if any(key in raw for key in RATE_KEYS if key != "web_search_per_1k"):
            problems.append((where, "write the token rates in `tiers` or beside it, not both"))
            return ()
        listed = raw["tiers"]
        if not isinstance(listed, list) or not listed:
            problems.append((where + ("tiers",), "must be a list of at least one tier"))
            return ()
        tiers = tuple(t for i, item in enumerate(listed)
                      if (t := _tier(item, where + ("tiers", i), problems)) is not None)
        search = raw.get("web_search_per_1k")            # beside the tiers: the price of every tier's searches
        if isinstance(search, (int, float)) and not isinstance(search, bool) and search >= 0:
            tiers = tuple(t if t.rates.web_search_per_1k is not None else
                          Tier(t.up_to, replace(t.rates, web_search_per_1k=float(search))) for t in tiers)
        bounds = [t.up_to for t in tiers]
        for i, bound in enumerate(bounds):
            if bound is None and i != len(bounds) - 1:
                problems.append((where + ("tiers", i), "only the last tier may omit up_to"))
            if i and bound is not None and bounds[i - 1] is not None and bound <= bounds[i - 1]:
                problems.append((where + ("tiers", i, "up_to"),
                                 f"tiers must be in ascending order ({bound} <= {bounds[i - 1]})"))
        return tiers
    tier = _tier(raw, where, problems, bounded=False)
    return (tier,) if tier is not None else ()


def _tier(raw: Any, where: tuple, problems: Problems, bounded: bool = True) -> Tier | None:
    if not isinstance(raw, dict):
        problems.append((where, "must be a mapping of rates"))
        return None
    rates = _rates(raw, where, problems)
    up_to = raw.get("up_to") if bounded else None
    if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int) or up_to < 1):
        problems.append((where + ("up_to",), "must be a whole number of prompt tokens, at least 1"))
        return None
    return Tier(up_to=up_to, rates=rates) if rates is not None else None


def _rates(raw: dict, where: tuple, problems: Problems) -> Rates | None:
    values: dict[str, float] = {}
    for key in RATE_KEYS:
        if key in raw and raw[key] is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                problems.append((where + (key,), "must be a number of USD, at least 0"))
                continue
            values[key] = float(value)
    missing = [key for key in ("input", "output") if key not in values]
    if missing:
        problems.append((where, f"needs {' and '.join(missing)} (USD per 1M tokens)"))
        return None
    return Rates(**values)


def _window(raw: Any, where: tuple, problems: Problems) -> Window | None:
    if not isinstance(raw, dict):
        problems.append((where, "must be a mapping: days, hours and rates"))
        return None
    days = raw.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        problems.append((where + ("days",), f"must be a list of days ({', '.join(DAYS)})"))
        return None
    hours = raw.get("hours")
    spans = []
    for i, text in enumerate(hours if isinstance(hours, list) else [None]):
        match = _SPAN.match(text) if isinstance(text, str) else None
        start = int(match.group(1)) * 60 + int(match.group(2)) if match else 0
        end = int(match.group(3)) * 60 + int(match.group(4)) if match else 0
        if not match or end <= start or end > 24 * 60:
            problems.append((where + ("hours", i) if isinstance(hours, list) else where + ("hours",),
                             'must be a list of UTC spans such as "01:00-04:00" (start before end)'))
            continue
        spans.append((start, end))
    rest = {k: v for k, v in raw.items() if k not in ("days", "hours")}
    tiers = _tiers_of(rest, where, problems)
    if not spans or not tiers:
        return None
    label = f"{','.join(days)} {','.join(hours)} UTC"
    return Window(days=frozenset(DAYS.index(d) for d in days), spans=tuple(spans), tiers=tiers, label=label)


def _when(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d") if moment.hour == moment.minute == moment.second == 0 \
        else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def tier_rates(row: Row, at: float, prompt: int) -> Rates:
    """The rates `row` charges a prompt of `prompt` tokens at `at`: its window's, if one holds,
    then the tier that covers the prompt."""
    tiers = row.tiers
    window = row.window_at(at)
    if window is not None:
        tiers = window.tiers
    return tier_for(tiers, prompt).rates


def tier_for(tiers: tuple[Tier, ...], prompt: int) -> Tier:
    """The first tier whose `up_to` covers the whole prompt (cached and written input included)."""
    for tier in tiers:
        if tier.up_to is None or prompt <= tier.up_to:
            return tier
    return tiers[-1]
