"""Command line: ccproxyd serve | check | route | prices | costs | statusline | claude | cache."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from functools import partial
from urllib.parse import urlsplit

import click

from ..money import clock
from ..config import table as config
from ..observe import logformat
from ..errors import ConfigError, NotFound
from ..observe.access import setup_logging
from ..config.settings import Settings, default_cache_dir, default_state_dir


@click.group()
def main() -> None:
    """ccproxyd: the Anthropic Messages API in front of OpenAI-compatible providers."""


# Pending connections the kernel queues: Sanic's default (100) makes a burst of new clients wait
# for SYN retransmits (1 s, 3 s, ...) instead of milliseconds.
LISTEN_BACKLOG = 1024


@main.command()
@click.option("--routes", "routes", default=Settings.routes, show_default=True, envvar="CCPROXYD_ROUTES",
              help="Routing table file.")
@click.option("--host", default=Settings.host, show_default=True, envvar="CCPROXYD_HOST")
@click.option("--port", default=Settings.port, show_default=True, type=int, envvar="CCPROXYD_PORT")
@click.option("--workers", default=Settings.workers, show_default=True, type=click.IntRange(1, 64),
              envvar="CCPROXYD_WORKERS")
@click.option("--cache-dir", default=None, envvar="CCPROXYD_CACHE_DIR",
              help="Response cache directory [default: $CACHE_DIRECTORY or ~/.cache/ccproxyd].")
@click.option("--cache-size-mb", default=Settings.cache_size >> 20, show_default=True, type=click.IntRange(1), envvar="CCPROXYD_CACHE_SIZE_MB",
              help="Response cache size limit.")
@click.option("--no-cache", is_flag=True, envvar="CCPROXYD_NO_CACHE", help="Disable the response cache.")
@click.option("--drain-timeout", default=Settings.drain_timeout, show_default=True, type=float,
              envvar="CCPROXYD_DRAIN_TIMEOUT", help="Seconds running streams get to finish after SIGTERM.")
@click.option("--orphan-grace", default=Settings.orphan_grace, show_default=True, type=click.FloatRange(0),
              envvar="CCPROXYD_ORPHAN_GRACE",
              help="Seconds an upstream call goes on after every client of it has gone, for a retry to join it.")
@click.option("--thread-ttl", default=Settings.thread_ttl, show_default=True, type=click.FloatRange(0),
              envvar="CCPROXYD_THREAD_TTL",
              help="Seconds a message thread (beta message-threads) can be continued after its last reply; 0 turns "
                   "threads off.")
@click.option("--thread-store-mb", default=Settings.thread_store_size >> 20, show_default=True, type=click.IntRange(1),
              envvar="CCPROXYD_THREAD_STORE_MB", help="Space for message threads (in each worker's memory, or in --thread-dir); the oldest go first.")
@click.option("--thread-dir", default="", envvar="CCPROXYD_THREAD_DIR",
              help="Keep message threads on disk here, shared by every worker and kept across restarts "
                   "[default: in each worker's memory].")
@click.option("--ledger-dir", default=None, envvar="CCPROXYD_LEDGER_DIR",
              help="Where the spend ledger (ledger.db) is kept [default: $STATE_DIRECTORY or ~/.local/state/ccproxyd].")
@click.option("--no-ledger", is_flag=True, envvar="CCPROXYD_NO_LEDGER", help="Do not record spend (no /spend, no status line figures).")
@click.option("--ledger-days", default=Settings.ledger_days, show_default=True, type=click.IntRange(0),
              envvar="CCPROXYD_LEDGER_DAYS", help="Days of spend the ledger keeps; 0 keeps everything.")
@click.option("--redis", "redis_url", default="", envvar="CCPROXYD_REDIS", metavar="URL",
              help="Team mode: share the response cache, in-flight calls, provider holds, client limits and message "
                   "threads with every daemon pointed at this Redis (redis://, rediss://; password in the URL or in "
                   "CCPROXYD_REDIS_PASSWORD or a credential file of that name).")
@click.option("--redis-timeout", default=Settings.redis_timeout, show_default=True, type=click.FloatRange(0.01),
              envvar="CCPROXYD_REDIS_TIMEOUT",
              help="Seconds a Redis command may take; past it Redis counts as down until a probe answers.")
@click.option("--log-level", default=Settings.log_level, show_default=True, envvar="CCPROXYD_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default=Settings.log_format, show_default=True, envvar="CCPROXYD_LOG_FORMAT",
              type=click.Choice(logformat.FORMATS, case_sensitive=False),
              help="json: each log record is one JSON object on one line (the access line's fields at its top level).")
@click.option("--log-bodies", is_flag=True, envvar="CCPROXYD_LOG_BODIES",
              help="Debug: log each request body (user ids and image/document data redacted).")
@click.option("--ping-interval", default=Settings.ping_interval, show_default=True, type=float, envvar="CCPROXYD_PING_INTERVAL",
              help="Seconds of upstream silence before an `event: ping` goes to the client.")
def serve(routes: str, host: str, port: int, workers: int, cache_dir: str | None, cache_size_mb: int,
          no_cache: bool, drain_timeout: float, orphan_grace: float, log_level: str, log_bodies: bool,
          ping_interval: float, thread_ttl: float = Settings.thread_ttl,
          thread_store_mb: int = Settings.thread_store_size >> 20, thread_dir: str = "",
          log_format: str = Settings.log_format,
          ledger_dir: str | None = None, no_ledger: bool = False, ledger_days: int = Settings.ledger_days,
          redis_url: str = "", redis_timeout: float = Settings.redis_timeout) -> None:
    """Run the daemon."""
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from ..server.app import create_app
    from ..server.connections import BoundedHttpProtocol

    log_format = log_format.lower()
    setup_logging(log_level.upper(), log_format)
    say = partial(_say, log_format == "json")
    try:
        table = config.load_file(routes)
    except ConfigError as exc:
        say(logging.ERROR, f"ccproxyd: cannot start, the routing table is invalid:\n{exc}")
        sys.exit(1)
    for warning in table.warnings:
        say(logging.WARNING, str(warning))
    for note in table.notes:
        say(logging.INFO, note)
    if not table.client_keys and host not in ("127.0.0.1", "localhost", "::1"):
        say(logging.WARNING, f"ccproxyd: warning: listening on {host} without client_keys: anyone who can reach "
                             f"port {port} can spend your provider credits")
    _check_telemetry(say)
    settings = Settings(routes=routes, host=host, port=port, workers=workers,
                        cache_dir="" if no_cache else (cache_dir or default_cache_dir()),
                        cache_size=cache_size_mb << 20, log_level=log_level.upper(), log_format=log_format,
                        log_bodies=log_bodies,
                        ping_interval=ping_interval, drain_timeout=drain_timeout, orphan_grace=orphan_grace,
                        thread_ttl=thread_ttl, thread_store_size=thread_store_mb << 20, thread_dir=thread_dir,
                        ledger_dir="" if no_ledger else (ledger_dir or default_state_dir()), ledger_days=ledger_days,
                        redis_url=redis_url, redis_timeout=redis_timeout,
                        metrics_dir=tempfile.mkdtemp(prefix="ccproxyd-metrics-") if workers > 1 else "")
    _check_listen(host, port, say)
    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(host=host, port=port, workers=workers, single_process=workers == 1,
                motd=False, access_log=False, backlog=LISTEN_BACKLOG, protocol=BoundedHttpProtocol)
    if workers == 1:
        Sanic.serve_single(primary=app)
    else:
        signal.signal(signal.SIGHUP, partial(_forward_to_workers, settings.metrics_dir))
        Sanic.serve(primary=app, app_loader=loader)


def _say(json_lines: bool, level: int, text: str) -> None:
    """A start-up line: as it is on standard error, or with --log-format json as a log record."""
    if json_lines:
        logging.getLogger("ccproxyd").log(level, "%s", text)
    else:
        click.echo(text, err=True)


def _check_telemetry(say) -> None:
    """With an OTLP endpoint set, the OpenTelemetry packages must be there and the settings usable."""
    from ..observe import access as observe

    if not observe.telemetry_wanted():
        return
    try:
        from ..observe import otel
        otel.check()
    except ImportError as exc:
        say(logging.ERROR, f"ccproxyd: cannot start: OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not "
                           f"installed ({exc.name}): pip install 'ccproxyd[otel]', or unset the variable")
        sys.exit(1)
    except ConfigError as exc:
        say(logging.ERROR, f"ccproxyd: cannot start: {exc.problems[0].message}")
        sys.exit(1)
    traces, metrics = otel.signals()
    what = " and ".join(name for name, on in (("spans", traces), ("metrics", metrics)) if on) or "nothing"
    endpoint = urlsplit(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
    where = f"{endpoint.scheme}://{endpoint.hostname}:{endpoint.port or ''}" if endpoint.hostname else "per-signal endpoints"
    say(logging.INFO, f"ccproxyd: OpenTelemetry: exporting {what} over OTLP/HTTP to {where.rstrip(':')}")


def _check_listen(host: str, port: int, say) -> None:
    """Fail with one clear line, not a traceback from inside Sanic, when the address is taken
    or not ours to bind; anything else is left to Sanic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            return
        reason = os.strerror(exc.errno)
        say(logging.ERROR, f"ccproxyd: cannot listen on {host}:{port}: {reason}. Choose another port with --port "
                           f"or CCPROXYD_PORT, or stop the process that holds it.")
        sys.exit(1)


def _forward_to_workers(metrics_dir: str, signum: int, frame) -> None:
    """With several workers, SIGHUP (systemd's ExecReload) reaches the manager process, which
    would otherwise die of it: pass it on to each worker that is serving, and each reloads its
    table.  A worker counts as serving once it has written its metrics snapshot, which happens
    after its own SIGHUP handler is in place; one still starting would be killed by the signal."""
    serving = {name[:-5] for name in os.listdir(metrics_dir) if name.endswith(".json")}
    for child in multiprocessing.active_children():
        if child.pid and str(child.pid) in serving:
            os.kill(child.pid, signum)


@main.command()
@click.argument("path", default=Settings.routes)
def check(path: str) -> None:
    """Validate a routing table: exit 0 if valid, 1 if not; one PATH:LINE:COL line per problem."""
    try:
        table = config.load_file(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        sys.exit(1)
    for warning in table.warnings:
        click.echo(str(warning))
    for warning in _money_warnings(table):
        click.echo(f"{path}: warning: {warning}")
    for note in table.notes:
        click.echo(note)
    click.echo(f"{path}: ok ({len(table.providers)} providers, {len(table.models)} models, "
               f"{len(table.routes)} routes, version {table.version})")


@main.command()
@click.argument("model")
@click.option("--routes", "routes", default=Settings.routes, show_default=True, envvar="CCPROXYD_ROUTES")
@click.option("--thinking", is_flag=True, help="The request asks for thinking.")
@click.option("--tools", is_flag=True, help="The request carries tools.")
@click.option("--input-tokens", default=0, type=int, help="Estimated input size of the request.")
def route(model: str, routes: str, thinking: bool, tools: bool, input_tokens: int) -> None:
    """Show what a client model name becomes."""
    from ..config.routing import Features, resolve

    try:
        features = Features(thinking=thinking, tools=tools, count_input=lambda: input_tokens)
        table = config.load_file(routes)
        decision = resolve(table, model, features)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except NotFound as exc:
        click.echo(exc.message, err=True)
        sys.exit(1)
    from ..money import compare, listing

    now = clock.now()
    click.echo(f"{model} -> routes[{decision.route_index}] (match {decision.route.match!r})")
    for i, target in enumerate(decision.targets):
        m = target.model
        role = "primary" if i == 0 else f"fallback {i}"
        click.echo(f"  {role}: {m.name} = {target.provider.name}:{m.upstream} at {target.provider.base_url} "
                   f"(context {m.context_window}, max output {m.max_output_tokens}, reasoning {m.reasoning}); "
                   "prices:")
        for line in listing.describe(m.prices, now, "    "):
            click.echo(line)
    claude = compare.claude_price(table, model)
    click.echo(f"  Claude list price of {model}:")
    for line in listing.describe(claude, now, "    "):
        click.echo(line)
    mine, theirs = compare.rates_at(decision.primary.model.prices, now), compare.rates_at(claude, now)
    dearer = compare.Comparison("", model, theirs, decision.primary.model.name, mine).dearer
    if dearer:
        click.echo(f"warning: {decision.primary.model.name} costs more per {' and '.join(dearer)} token than "
                   f"{model} ({compare.money_rates(mine)} against {compare.money_rates(theirs)} per Mtok)")
    for warning in _money_warnings(table):
        if "has no price" in warning and decision.primary.model.name in warning.split(" (")[0]:
            click.echo(f"warning: {warning}")


def _money_warnings(table) -> list[str]:
    from ..money import compare

    return compare.warnings(table, clock.now())


@main.command()
@click.argument("models", nargs=-1)
@click.option("--routes", "routes", default=Settings.routes, show_default=True, envvar="CCPROXYD_ROUTES")
@click.option("--refresh", is_flag=True, help="Read OpenRouter's public models list into the override file, then show.")
@click.option("--url", default=None, help="With --refresh: where the models list is read from "
                                          "[default: https://openrouter.ai/api/v1/models].")
@click.option("--file", "override", default=None, envvar="CCPROXYD_PRICES",
              help="The override file [default: prices.yaml in the state directory].")
@click.option("--force", is_flag=True, help="With --refresh: write even an answer with far fewer models than the file.")
def prices(models: tuple[str, ...], routes: str, refresh: bool, url: str | None, override: str | None,
           force: bool) -> None:
    """The prices the daemon would use, with their dates and sources: for MODELs (Claude ids or
    models of the table), else every model of the table and each route against Claude."""
    from ..money import catalog, listing

    path = override or catalog.override_path()
    if override:
        os.environ["CCPROXYD_PRICES"] = override          # the table below loads this override
    if refresh:
        _refresh(url or _refresh_url(), path, force)
    try:
        table = config.load_file(routes)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    now = clock.now()
    lines = listing.models_lines(table, list(models), now) if models else listing.table_lines(table, now)
    for line in listing.source_lines(table) + lines:
        click.echo(line)


def _refresh_url() -> str:
    from ..money.refresh import URL
    return URL


def _refresh(url: str, path: str, force: bool) -> None:
    import httpx2

    from ..money.refresh import RefreshError, refresh

    click.echo(f"reading {url} …", err=True)
    try:
        response = httpx2.get(url, timeout=30, follow_redirects=True)
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError) as exc:
        click.echo(f"ccproxyd: cannot read {url}: {exc}; {path} is unchanged", err=True)
        sys.exit(1)
    if response.status_code != 200:
        click.echo(f"ccproxyd: {url} answered HTTP {response.status_code}; {path} is unchanged", err=True)
        sys.exit(1)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now()))
    try:
        listed, added, notes = refresh(response.content, path, since, force)
    except RefreshError as exc:
        click.echo(f"ccproxyd: not used: {exc}; {path} is unchanged", err=True)
        sys.exit(1)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{path}: {listed} OpenRouter models, {added} new price rows (dated {since})", err=True)


@main.command()
@click.option("--url", default=None, envvar="CCPROXYD_URL",
              help="The running daemon [default: http://127.0.0.1:$CCPROXYD_PORT, port 8082].")
@click.option("--by", type=click.Choice(["model", "route", "session", "client", "day", "version"]), default=None,
              help="Spend from the ledger, grouped so (kept across restarts) instead of since start-up.")
@click.option("--since", default=None, metavar="YYYY-MM-DD", help="With --by: from this day (UTC) on.")
@click.option("--session", default=None, help="With --by: one Claude Code session only.")
@click.option("--json", "as_json", is_flag=True, help="With --by: the /spend answer as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="With --by: one CSV row per group.")
def costs(url: str | None, by: str | None, since: str | None, session: str | None, as_json: bool,
          as_csv: bool) -> None:
    """Summarise what a running daemon has spent and saved: since it started, or with --by from
    its spend ledger."""
    if by is not None:
        from . import report

        sys.exit(report.costs_by(url, by, since, session, "json" if as_json else "csv" if as_csv else "table"))
    if as_json or as_csv or since or session:
        click.echo("ccproxyd: --since, --session, --json and --csv go with --by", err=True)
        sys.exit(2)
    import httpx2

    url = _daemon_url(url)
    metrics = url if url.endswith("/metrics") else url + "/metrics"
    try:
        response = httpx2.get(metrics, timeout=5)
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError) as exc:
        click.echo(f"ccproxyd: cannot read {metrics}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                   err=True)
        sys.exit(1)
    if response.status_code != 200:
        click.echo(f"ccproxyd: cannot read {metrics}: HTTP {response.status_code}", err=True)
        sys.exit(1)
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = values.get(name, 0.0) + float(value)
            except ValueError:
                click.echo(f"ccproxyd: {metrics} is not a ccproxyd's metrics page", err=True)
                sys.exit(1)
    if not any(name.startswith("ccproxyd_") for name in values):
        click.echo(f"ccproxyd: {metrics} is not a ccproxyd's metrics page", err=True)
        sys.exit(1)
    requests = sum(v for k, v in values.items() if k.startswith("ccproxyd_requests_total"))
    tokens = {kind: values.get(f'ccproxyd_tokens_total{{kind="{kind}"}}', 0) for kind in ("input", "cached", "output")}
    click.echo(f"requests: {requests:.0f}")
    click.echo("tokens: " + ", ".join(f"{k} {v:.0f}" for k, v in tokens.items()))
    click.echo(f"cost: ${values.get('ccproxyd_cost_usd_total', 0):.4f}")
    click.echo(f"saved against Claude list prices: ${values.get('ccproxyd_savings_usd_total', 0):.4f}")


def _daemon_url(url: str | None) -> str:
    """The running daemon's address: --url / CCPROXYD_URL, else loopback at CCPROXYD_PORT."""
    from .local import daemon_url

    return daemon_url(url)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--url", default=None, help="The running daemon [default: $CCPROXYD_URL, $ANTHROPIC_BASE_URL, "
                                           "else http://127.0.0.1:$CCPROXYD_PORT].")
def statusline(url: str | None) -> None:
    """Claude Code's status line: reads its status JSON on stdin, prints the model that answers,
    the session's cost and savings, and the share of input the provider's cache served."""
    from .statusline import main as run

    sys.exit(run(["--url", url] if url else []))


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--url", default=None, envvar="CCPROXYD_URL",
              help="The running daemon [default: http://127.0.0.1:$CCPROXYD_PORT, port 8082].")
@click.option("--claude", "claude_bin", default="claude", envvar="CCPROXYD_CLAUDE_BIN", show_default=True,
              help="The Claude Code executable.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def claude(url: str | None, claude_bin: str, args: tuple[str, ...]) -> None:
    """Start Claude Code pointed at this daemon; ARGS go to Claude Code unchanged.

    Claude Code gets ANTHROPIC_BASE_URL and an auth token (CCPROXYD_CLIENT_KEY when the daemon
    wants client keys); no ANTHROPIC_API_KEY, so it does not ask about a custom key; and
    `ccproxyd statusline` as its status line, by --settings (unless ARGS has one): the user's
    settings files are not touched."""
    from .launch import launch

    launch(_daemon_url(url), claude_bin, args)


@main.group()
def cache() -> None:
    """Inspect or empty the response cache."""


@cache.command("stats")
@click.option("--cache-dir", default=None, envvar="CCPROXYD_CACHE_DIR")
def cache_stats(cache_dir: str | None) -> None:
    """Entries and bytes of the response cache (hits, misses and evictions: the daemon's /metrics)."""
    from ..state.answers import Store

    store = Store(cache_dir or default_cache_dir())
    stats = store.stats()
    for key in ("directory", "entries", "bytes"):
        click.echo(f"{key}: {stats[key]}")
    store.close()


@cache.command("clear")
@click.option("--cache-dir", default=None, envvar="CCPROXYD_CACHE_DIR")
def cache_clear(cache_dir: str | None) -> None:
    """Remove every cached answer."""
    from ..state.answers import Store

    store = Store(cache_dir or default_cache_dir())
    click.echo(f"removed {store.clear()} entries from {store.directory}")
    store.close()


if __name__ == "__main__":
    main()
