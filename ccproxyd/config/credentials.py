"""Where provider keys come from: the environment, or a file named after the variable in
systemd's $CREDENTIALS_DIRECTORY (LoadCredential=).  Keys are never written in routes.yaml.

Keys are read when a routing table is loaded (off the event loop) and kept in the table; every
key read is registered with `redact`, so that no echo of it can leave the process."""

from __future__ import annotations

import os
from typing import Mapping

from ..observe import redact


def lookup(name: str, env: Mapping[str, str]) -> str | None:
    value = env.get(name)
    if not value:
        value = _from_file(name, env.get("CREDENTIALS_DIRECTORY"))
    redact.register(value)
    return value or None


def _from_file(name: str, directory: str | None) -> str | None:
    if not directory:
        return None
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
