"""GET /spend: the spend ledger grouped by model, route, session, client or day (thin handler)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sqlite3

import orjson
from sanic import Request
from sanic.response import raw

from ..money import clock
from ..errors import ApiError, InvalidRequest, NotFound
from ..state.ledger import GROUPS

log = logging.getLogger("ccproxyd.http")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
EVERYTHING = "1970-01-01"


def parse_query(args, days: int) -> tuple[str, str, str | None]:
    """(by, since, session) from the query string; since defaults to the first day the ledger
    keeps (`days` ago; everything when it keeps all)."""
    by = args.get("by", "day")
    if by not in GROUPS:
        raise InvalidRequest(f"by: must be one of {', '.join(GROUPS)}, not {by!r}")
    since = args.get("since")
    if since is None:
        since = ((clock.today() - dt.timedelta(days=days)).isoformat()
                 if days > 0 else EVERYTHING)
    elif not DAY.fullmatch(since) or not _is_date(since):
        raise InvalidRequest(f"since: must be a day as YYYY-MM-DD (UTC), not {since!r}")
    session = args.get("session")
    return by, since, session[:100] if session is not None else None


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


async def spend(request: Request):
    ledger = request.app.ctx.ledger
    if ledger is None:
        raise NotFound("the spend ledger is off (the daemon runs with --no-ledger)")
    by, since, session = parse_query(request.args, ledger.days)
    try:
        answer = await asyncio.get_running_loop().run_in_executor(None, ledger.spend, by, since, session)
    except sqlite3.Error as exc:
        log.warning("spend ledger: cannot read %s: %s", ledger.path, exc)
        raise ApiError(f"the spend ledger cannot be read ({type(exc).__name__})") from None
    return raw(orjson.dumps(answer), content_type="application/json")
