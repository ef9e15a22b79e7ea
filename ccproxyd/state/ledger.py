"""The spend ledger: what each answered request cost and saved, in SQLite, kept across restarts.

One row per request that an answer came for (from an upstream, a shared in-flight call or the
response cache), taken from its access-log record, so the ledger and the log lines say the same:
the request that ran the upstream call carries its cost; a follower of that call and a cache hit
cost nothing and count the Claude list price they avoided as savings (observe.Record.usage).

Rows are queued on the event loop (a tuple, no I/O) and written by one writer thread in batches
(batching.BatchWriter, as the response cache writes).  The database is in WAL mode with a busy
timeout, so several workers write to one file and readers never wait for a writer.  A damaged
file is set aside (`ledger.db.damaged`) and a new one started, logged once; while even that
fails, rows are dropped and requests are served as ever.  Rows older than `days` are deleted
when the ledger opens and then hourly.

Queries (`spend`) open their own read connection: call them off the event loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import contextlib
import os
import sqlite3
import threading
import time

from ..money import clock
from .batching import BatchWriter
from .outage import Outage, identity, set_aside

log = logging.getLogger("ccproxyd.ledger")
FILENAME = "ledger.db"
BUSY_MS = 5000               # a writer waits this long for another worker's transaction
WRITE_WINDOW = 0.05          # seconds the writer waits for more rows to commit together
WRITE_BATCH = 256
PRUNE_EVERY = 3600.0         # seconds between deletions of rows past the retention limit
FLUSH_WAIT = 1.0             # seconds a query waits for the rows queued before it
REOPEN_SECONDS = 30.0        # between attempts while the ledger cannot be opened

COLUMNS = ("ts", "day", "session", "client", "route", "provider", "model", "requested", "cache",
           "cost", "savings", "claude_price", "input", "cached_input", "output", "reasoning",
           "cache_write", "estimated", "rate", "claude_rate", "request_id", "cc_version", "miss_cost")
# cost, savings, claude_price and miss_cost are NULL when unknown (no price on that side), never 0
SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
  ts REAL NOT NULL, day TEXT NOT NULL, session TEXT, client TEXT, route TEXT, provider TEXT,
  model TEXT, requested TEXT, cache TEXT, cost REAL, savings REAL, claude_price REAL,
  input INTEGER NOT NULL, cached_input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL,
  cache_write INTEGER NOT NULL DEFAULT 0, estimated INTEGER NOT NULL DEFAULT 0, rate TEXT, claude_rate TEXT,
  request_id TEXT, cc_version TEXT, miss_cost REAL);
CREATE INDEX IF NOT EXISTS spend_day ON spend(day);
CREATE INDEX IF NOT EXISTS spend_session ON spend(session);
"""
# columns added since the first ledger (as SCHEMA has them): added to an older file when it opens;
# its rows keep their values (NULL, or the default, where the column is new)
ADDED = (("cache_write", "INTEGER NOT NULL DEFAULT 0"), ("estimated", "INTEGER NOT NULL DEFAULT 0"),
         ("rate", "TEXT"), ("claude_rate", "TEXT"), ("request_id", "TEXT"), ("cc_version", "TEXT"),
         ("miss_cost", "REAL"))
INSERT = f"INSERT INTO spend ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

_CHECK = ("check",)          # a writer-queue item: a reader found the file damaged

# what `/spend?by=` groups on: the key column of each grouping
GROUPS = {"model": "model", "route": "route", "session": "session", "client": "client", "day": "day",
          "version": "cc_version"}


def row_of(record) -> tuple | None:
    """The ledger row for an access-log record (observe.Record), or None when no answer came with
    a usage (an error before the answer, an answer made by ccproxyd itself)."""
    if record.upstream_model is None or not (record.input_tokens or record.cached_tokens or record.output_tokens):
        return None
    return (record.at, clock.day(record.at), record.session_id, record.client,
            record.route_match, record.provider, record.upstream_model, record.client_model, record.cache,
            record.cost_usd, record.savings_usd, record.claude_price_usd,
            record.input_tokens, record.cached_tokens, record.output_tokens, record.reasoning_tokens,
            record.cache_write_tokens, int(record.usage_estimated), record.rate, record.claude_rate,
            record.request_id, record.cc_version, record.miss_cost_usd)


def _add_columns(connection: sqlite3.Connection) -> None:
    """Bring a ledger written by an older ccproxyd up to COLUMNS.  Another worker may add a column
    at the same time: a "duplicate column" error from that race is the same result."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(spend)")}
    for name, kind in ADDED:
        if name not in present:
            try:
                connection.execute(f"ALTER TABLE spend ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    connection.execute("PRAGMA synchronous=NORMAL")     # WAL: a commit does not wait for fsync
    return connection


DAMAGE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _is_damage(exc: BaseException) -> bool:
    """The file itself is bad ("file is not a database", "database disk image is malformed"), as
    opposed to a lock held too long, a full disk, a directory that cannot be written, or a bug."""
    return isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) in DAMAGE


class Ledger:
    def __init__(self, directory: str, days: int) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self.days = days
        self.connection: sqlite3.Connection | None = None     # the writer's (and the constructor's)
        self._inode: tuple[int, int] | None = None
        self._tried: tuple[int, int] | None = None     # the file the last open tried
        self.outage = Outage(log)
        self._pruned_at = 0.0
        self._open_error: BaseException | None = None
        self._dropping = False                 # rows are being dropped (logged once until one is written)
        self._lock = threading.Lock()
        self._writer = BatchWriter("ccproxyd-ledger-writer", self._write, WRITE_WINDOW, WRITE_BATCH)
        self._open_or_rebuild()

    @property
    def available(self) -> bool:
        return self.connection is not None

    def _open_or_rebuild(self) -> bool:
        """Open the ledger; a file that is not a database is set aside and a new one started."""
        if self._open():
            return True
        if not _is_damage(self._open_error):
            return False
        self._set_aside()
        return self._open()

    # ------------------------------------------------------------ health

    def _open(self) -> bool:
        connection = None
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._tried = identity(self.path) or self._tried   # the file this try opens: set aside if it fails
            connection = _connect(self.path)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            _add_columns(connection)
            connection.execute("SELECT count(*) FROM spend WHERE day = ''").fetchone()
            st = os.stat(self.path)
        except (OSError, sqlite3.Error) as exc:
            if connection is not None:
                connection.close()
            self._open_error = exc
            self.outage.failed("spend ledger: cannot open %s (%s: %s); requests are served but not recorded",
                               self.path, type(exc).__name__, exc)
            return False
        self.connection, self._inode = connection, (st.st_dev, st.st_ino)
        self.outage.worked("spend ledger: %s is working again", self.path)
        self._prune()
        return True

    def _set_aside(self) -> None:
        """Move a damaged database (and its WAL) aside, unless another worker already did."""
        now = identity(self.path)
        if now is None or now != (self._inode or self._tried):
            return                              # another worker has set it aside and started anew
        try:
            set_aside((self.path + suffix, self.path + ".damaged" + suffix) for suffix in ("", "-wal", "-shm"))
        except OSError as exc:
            log.warning("spend ledger: cannot set %s aside: %s", exc.filename, exc)
            return
        log.warning("spend ledger: the damaged %s is now %s.damaged; a new ledger starts", self.path, self.path)

    def _drop_connection(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self.connection.close()
        self.connection = None

    def _damaged(self, exc: BaseException) -> None:
        """On the writer thread: the database failed; set it aside and start a new one."""
        self.outage.failed("spend ledger: %s is damaged (%s: %s); setting it aside", self.path, type(exc).__name__, exc)
        self._drop_connection()
        self._set_aside()
        self._open()

    def _same_file(self) -> bool:
        return identity(self.path) == self._inode

    def _reopen(self) -> None:
        """The file was deleted or replaced (by hand, or by another worker that set it aside):
        write to the one at the path now, or a new one."""
        log.warning("spend ledger: %s was deleted or replaced; reopening it", self.path)
        try:
            self.connection.close()
        except sqlite3.Error:
            pass
        self.connection = None
        self._open()

    # ------------------------------------------------------------ writing

    def add(self, row: tuple) -> None:
        """Queue a row (row_of); never blocks, never raises."""
        self._writer.put(row)

    def record(self, record) -> None:
        """An observe.emit sink: the request's row, if an answer with a usage came."""
        row = row_of(record)
        if row is not None:
            self._writer.put(row)

    def _write(self, rows: list) -> None:
        with self._lock:
            if self.connection is not None and not self._same_file():
                self._reopen()
            if _CHECK in rows:
                rows = [row for row in rows if row is not _CHECK]
                self._check()
            if not rows:
                return
            if self.connection is None and (not self.outage.due(REOPEN_SECONDS)
                                            or not self._open_or_rebuild()):
                return                         # the ledger is down: these rows are lost, serving is not
            try:
                with self.connection:
                    self.connection.execute("BEGIN IMMEDIATE")
                    self.connection.executemany(INSERT, rows)
            except (OSError, sqlite3.Error) as exc:
                if _is_damage(exc):
                    self._damaged(exc)
                elif not self._dropping:        # busy past the timeout, a full disk, a read-only file
                    log.warning("spend ledger: rows not recorded in %s: %s", self.path, exc)
                self._dropping = True
                return
            self._dropping = False
            if time.time() - self._pruned_at >= PRUNE_EVERY:
                self._prune()

    def _check(self) -> None:
        """A reader found the file damaged: confirm it on a fresh connection, then set it aside."""
        if self.connection is None:
            return
        try:
            probe = _connect(self.path)
            try:
                probe.execute("SELECT count(*) FROM spend WHERE day = ''").fetchone()
            finally:
                probe.close()
        except sqlite3.Error as exc:
            if _is_damage(exc):
                self._damaged(exc)

    def _prune(self) -> None:
        self._pruned_at = time.time()
        if self.days <= 0 or self.connection is None:
            return
        cutoff = (clock.today() - dt.timedelta(days=self.days)).isoformat()
        try:
            with self.connection:
                removed = self.connection.execute("DELETE FROM spend WHERE day < ?", (cutoff,)).rowcount
        except sqlite3.Error as exc:
            log.warning("spend ledger: cannot remove rows older than %d days: %s", self.days, exc)
            return
        if removed:
            log.info("spend ledger: removed %d rows older than %s", removed, cutoff)

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._drop_connection()

    # ------------------------------------------------------------ reading

    def spend(self, by: str, since: str, session: str | None = None) -> dict:
        """Totals grouped by `by` (GROUPS) since the day `since` (YYYY-MM-DD, UTC), for one session
        or all: the `/spend` answer.  Blocking."""
        self._writer.flush(FLUSH_WAIT)          # the rows of requests answered just now count too
        where, args = "day >= ?", [since]
        if session is not None:
            where, args = where + " AND session = ?", args + [session]
        try:
            totals, models = self._read(GROUPS[by], where, args)
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                self._writer.put(_CHECK)        # the writer confirms it and sets the file aside
            raise
        by_key: dict = {}
        for key, provider, model, requested, count, cost, costed, last in models:
            by_key.setdefault(key, []).append({
                "model": model, "provider": provider, "requested": requested, "requests": count,
                "cost_usd": round(cost, 6) if costed else None, "last_at": _iso(last)})
        rows = [_row(values, by_key.get(values[0], [])) for values in totals]
        rows.sort(key=(lambda r: r["key"] or "") if by == "day" else (lambda r: (-(r["cost_usd"] or 0), -r["requests"])))
        total = _row((None, *(sum(values[i] for values in totals) for i in range(1, len(AGGREGATES) + 1))), [])
        del total["key"], total["models"]
        return {"by": by, "since": since, **({"session": session} if session is not None else {}),
                "rows": rows, "total": total}

    def _read(self, column: str, where: str, args: list) -> tuple[list, list]:
        connection = _connect(self.path)
        try:
            totals = connection.execute(
                f"SELECT {column}, {', '.join(AGGREGATES)} FROM spend WHERE {where} GROUP BY {column}",
                args).fetchall()
            models = connection.execute(
                f"SELECT {column}, provider, model, requested, count(*), total(cost), count(cost), max(ts) "
                f"FROM spend WHERE {where} GROUP BY {column}, provider, model, requested "
                f"ORDER BY count(*) DESC, max(ts) DESC", args).fetchall()
        finally:
            connection.close()
        return totals, models


AGGREGATES = ("count(*)", "total(cost)", "total(savings)", "total(claude_price)", "total(input)",
              "total(cached_input)", "total(output)", "total(reasoning)", "total(cache = 'hit')",
              "count(cost)", "count(savings)", "count(claude_price)", "total(cache_write)", "total(estimated)",
              "total(miss_cost)", "count(miss_cost)")


def _row(values: tuple, models: list[dict]) -> dict:
    """One group's totals.  A money figure is the sum over the rows that have it; the rows that
    do not (no price on that side) are counted in `*_unknown`, and a figure no row has is None."""
    (key, count, cost, savings, claude, fresh, cached, output, reasoning, hits,
     costed, saved, claimed, written, estimated, misses, missed) = values
    count = int(count)
    prompt = fresh + cached + written
    return {"key": key, "requests": count, "cache_hits": int(hits),
            "cost_usd": round(cost, 6) if costed else None,
            "savings_usd": round(savings, 6) if saved else None,
            "claude_price_usd": round(claude, 6) if claimed else None,
            "cost_unknown": count - int(costed), "savings_unknown": count - int(saved),
            "input_tokens": int(fresh), "cached_input_tokens": int(cached), "cache_write_tokens": int(written),
            "output_tokens": int(output), "reasoning_tokens": int(reasoning), "estimated": int(estimated),
            # the share of the input the provider's prompt cache served, and what the rest cost
            "cached_share": round(cached / prompt, 4) if prompt else None,
            "miss_cost_usd": round(misses, 6) if missed else None,
            "models": models}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
