"""Daemon settings from flags and CCPROXYD_* environment variables (not hot-reloaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_cache_dir() -> str:
    if os.environ.get("CACHE_DIRECTORY"):          # set by systemd's CacheDirectory=
        return os.environ["CACHE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ccproxyd")


def default_state_dir() -> str:
    """Where the spend ledger lives: systemd's StateDirectory=, else $XDG_STATE_HOME/ccproxyd."""
    if os.environ.get("STATE_DIRECTORY"):          # set by systemd's StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ccproxyd")


@dataclass(frozen=True)
class Settings:
    routes: str = "routes.yaml"
    host: str = "127.0.0.1"
    port: int = 8082
    workers: int = 1
    cache_dir: str = ""                  # "" = no response cache
    cache_size: int = 1 << 30            # bytes; least recently stored entries are evicted past it
    log_level: str = "INFO"
    log_format: str = "text"             # "json": one JSON object per log line (logformat.py)
    log_bodies: bool = False             # debug only: request bodies in the log, redacted
    ping_interval: float = 10.0          # seconds of upstream silence before an `event: ping`
    max_body_bytes: int = 32 * 1024 * 1024
    metrics_dir: str = ""                # with several workers: where each one leaves its snapshot
    drain_timeout: float = 30.0          # seconds running streams get to finish after SIGTERM
    orphan_grace: float = 5.0            # seconds an upstream call runs on after its last client left
    thread_ttl: float = 3600.0           # seconds a message-thread point is kept; 0 = threads off
    thread_store_size: int = 256 << 20   # bytes of thread state per worker; the oldest go first past it
    thread_dir: str = ""                 # "" = threads in each worker's memory; else a diskcache all share
    ledger_dir: str = ""                 # "" = no spend ledger; else where ledger.db lives
    ledger_days: int = 90                # days of spend the ledger keeps; 0 = all
    redis_url: str = ""                  # "" = no team mode; else the Redis every daemon of the fleet shares
    redis_timeout: float = 1.0           # seconds a Redis command may take before Redis counts as down
