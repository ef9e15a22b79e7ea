"""outage.Outage on an injected clock: one warning when a store stops working and one when it
works again, however many tries fail between; retries spaced from the last try.  And setting a
damaged file aside: moved, a source already gone skipped, and a path's identity."""

from __future__ import annotations

import logging
import os

import pytest

from ccproxyd.state.outage import Outage, identity, set_aside

from .support import Clock


def test_one_warning_per_outage_and_one_when_it_ends(caplog):
    clock = Clock(100.0)
    outage = Outage(logging.getLogger("ccproxyd.test-outage"), clock)
    caplog.set_level(logging.WARNING, "ccproxyd.test-outage")
    outage.worked("store %s works again", "s")                   # no outage: nothing to say
    assert not outage.down and outage.seconds == 0.0
    assert outage.failed("store %s cannot be used (%s)", "s", "first") is True
    clock.now = 107.0
    assert outage.failed("store %s cannot be used (%s)", "s", "second") is False
    assert outage.down and outage.seconds == 7.0 and outage.last_try == 107.0
    clock.now = 112.5
    outage.worked("store %s works again after %.1f s", "s", outage.seconds)
    outage.worked("store %s works again after %.1f s", "s", outage.seconds)
    assert outage.failed("store %s cannot be used (%s)", "s", "third") is True
    assert [r.getMessage() for r in caplog.records] == [
        "store s cannot be used (first)", "store s works again after 12.5 s", "store s cannot be used (third)"]
    assert outage.count == 2


def test_retries_are_spaced_from_the_last_try():
    clock = Clock(1000.0)
    outage = Outage(logging.getLogger("ccproxyd.test-outage"), clock)
    assert outage.due(30)                                        # never tried
    outage.failed("down")
    clock.now = 1029.0
    assert not outage.due(30)
    clock.now = 1030.0
    assert outage.due(30)
    outage.tried()
    assert not outage.due(30)


def test_set_aside_moves_what_is_there(tmp_path):
    (tmp_path / "a.db").write_bytes(b"damaged")
    (tmp_path / "a.db-wal").write_bytes(b"wal")
    before = identity(str(tmp_path / "a.db"))
    set_aside((str(tmp_path / f"a.db{s}"), str(tmp_path / f"a.db.damaged{s}")) for s in ("", "-wal", "-shm"))
    assert sorted(os.listdir(tmp_path)) == ["a.db.damaged", "a.db.damaged-wal"]
    assert identity(str(tmp_path / "a.db")) is None
    assert identity(str(tmp_path / "a.db.damaged")) == before        # the same file, moved
    (tmp_path / "b.db").write_bytes(b"x")
    with pytest.raises(OSError) as failed:                       # a destination that cannot be written
        set_aside([(str(tmp_path / "b.db"), str(tmp_path / "missing-dir" / "b.db"))])
    assert failed.value.filename == str(tmp_path / "b.db") and (tmp_path / "b.db").exists()
