"""systemd's notification protocol (sd_notify) over $NOTIFY_SOCKET; a no-op outside systemd."""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]               # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def reloading() -> bool:
    usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, when systemd asks for keep-alives.  WATCHDOG_PID names the main
    process; with several workers that is the manager, and the workers (its children) answer for
    it (the unit has NotifyAccess=all)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid not in (str(os.getpid()), str(os.getppid()))):
        return None
    return int(usec) / 2_000_000
