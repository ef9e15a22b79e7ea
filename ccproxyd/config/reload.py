"""Live reload of routes.yaml: watch its directory, wait for the file to settle, load, validate,
swap one immutable snapshot.  A broken edit is refused and the old table keeps serving.

The directory is watched rather than the file because editors save by rename and Kubernetes
ConfigMaps swap a symlink; both replace the inode a file watch would follow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import watchfiles

from . import table as config
from .table import RouteTable
from ..errors import ConfigError

log = logging.getLogger("ccproxyd.reload")
SETTLE_SECONDS = 0.15        # the file must be unchanged this long before it is read


@dataclass
class ReloadState:
    """What /health and metrics show about reloads in this worker."""
    accepted: int = 0
    rejected: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    loaded_at: float = field(default_factory=time.time)


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def settle(path: str) -> None:
    """Wait until the file stops changing (tools that write in several chunks)."""
    before = _signature(path)
    while True:
        await asyncio.sleep(SETTLE_SECONDS)
        now = _signature(path)
        if now == before:
            return
        before = now


class Reloader:
    def __init__(self, app_ctx, path: str) -> None:
        self.ctx = app_ctx
        self.path = path
        self.state = ReloadState()
        self._lock = asyncio.Lock()
        self._last_rejected: str | None = None      # version of the last refused text

    def reload(self, reason: str, keys_changed: bool = False) -> bool:
        """Load the file now (blocking: call it from a thread); swap on success.  Returns True when
        a new table went live.  `keys_changed`: a credential file changed, so the same text is
        loaded again for its keys."""
        current: RouteTable = self.ctx.table
        try:
            text = config.read_text(self.path)
        except ConfigError as exc:
            return self._refuse(exc, None, reason)
        version = config.version_of(text)
        if version == self._last_rejected or (version == current.version and not keys_changed):
            return False                            # already serving it, or already refused it
        try:
            table = config.load(text, self.path)
        except ConfigError as exc:
            return self._refuse(exc, version, reason)
        self.ctx.table = table                      # the one assignment a request may observe
        self._last_rejected = None                  # the same broken edit again is refused (and said) again
        self.state.accepted += 1
        self.state.last_error = None
        self.state.loaded_at = time.time()
        log.info("routing table %s -> version %s (%s)", current.version, table.version, reason)
        known = {w.message for w in current.warnings}
        fresh = [w for w in table.warnings if w.message not in known]      # each warning once, not at each edit
        if fresh and self._first_to_say(f"warned-{self.state.accepted}-{table.version}"):
            for warning in fresh:
                log.warning("%s", warning)
        return True

    def _refuse(self, exc: ConfigError, version: str | None, reason: str) -> bool:
        self._last_rejected = version
        self.state.rejected += 1
        self.state.last_error = str(exc.problems[0])
        self.state.last_error_at = time.time()
        if version is None or self._first_to_say(f"refused-{self.state.accepted}-{version}"):
            for problem in exc.problems:
                log.error("routing table refused (%s), still serving version %s: %s",
                          reason, self.ctx.table.version, problem)
        return False

    def _first_to_say(self, what: str) -> bool:
        """With several workers, each reloads the same file: the first to claim `what` (a marker
        file in the shared metrics directory, named by the table version and the count of tables
        accepted so far, which every worker shares) logs it, the others stay quiet."""
        directory = getattr(getattr(self.ctx, "settings", None), "metrics_dir", "")
        if not directory:
            return True
        try:
            os.close(os.open(os.path.join(directory, what), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    async def reload_settled(self, reason: str, keys_changed: bool = False) -> bool:
        async with self._lock:
            await settle(self.path)
            swapped = await asyncio.get_running_loop().run_in_executor(None, self.reload, reason, keys_changed)
            if swapped:
                await self.ctx.upstreams.retire(set(self.ctx.table.providers.values()))
            return swapped

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload when the routing table changes, and when a file in $CREDENTIALS_DIRECTORY does
        (a key rotated by hand): keys are read at load, never on a request's path."""
        routes = os.path.abspath(self.path)
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        credentials = os.path.abspath(credentials) if credentials else None
        paths = [os.path.dirname(routes) or "."] + ([credentials] if credentials and os.path.isdir(credentials) else [])

        def wanted(_change, path: str) -> bool:
            return path == routes or (credentials is not None and os.path.dirname(path) == credentials)

        async for changes in watchfiles.awatch(*paths, stop_event=stop, debounce=100, step=25, recursive=False,
                                                ignore_permission_denied=True, watch_filter=wanted):
            keys_changed = any(path != routes for _change, path in changes)
            try:
                await self.reload_settled("credentials changed" if keys_changed else "file changed", keys_changed)
            except Exception:                       # a bug must not end live reload for good
                log.exception("reload of %s failed unexpectedly; still watching", self.path)
