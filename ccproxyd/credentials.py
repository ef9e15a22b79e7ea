"""Where provider keys come from: the environment, or a file named after the variable in
systemd's $CREDENTIALS_DIRECTORY (LoadCredential=).  Keys are never written in routes.yaml."""

from __future__ import annotations

import os
from typing import Mapping


def lookup(name: str, env: Mapping[str, str]) -> str | None:
    value = env.get(name)
    if value:
        return value
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None
    return None
