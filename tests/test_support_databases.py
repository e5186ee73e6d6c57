"""The test suite's own database helpers, where a mistake would cost the machine running it:
the embedded server's data may live in /dev/shm, that is in memory, so what a killed run left
there must go, and nothing a live run uses may."""

import os
import subprocess
import sys
import time

from tests.support.databases import SERVER_DIRECTORY_PREFIX, STALE_AFTER_SECONDS, remove_stale_servers


def test_a_killed_run_s_server_directory_is_removed_and_a_live_or_young_one_kept(tmp_path):
    def server_directory(name: str, pid: int | None, age: float):
        base = tmp_path / (SERVER_DIRECTORY_PREFIX + name)
        (base / "pgdata").mkdir(parents=True)
        if pid is not None:
            (base / "pgdata" / "postmaster.pid").write_text(f"{pid}\n/var/lib/pgdata\n")
        then = time.time() - age
        os.utime(base, (then, then))
        return base

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    old = STALE_AFTER_SECONDS + 60
    stale = server_directory("stale", ended.pid, old)
    never_started = server_directory("never-started", None, old)
    live = server_directory("live", os.getpid(), old)
    starting = server_directory("starting", None, 5)
    someone_else = tmp_path / "not-ours"
    someone_else.mkdir()
    os.utime(someone_else, (0, 0))

    assert sorted(remove_stale_servers(str(tmp_path))) == sorted([stale, never_started])
    assert not stale.exists() and not never_started.exists()
    assert live.exists() and starting.exists() and someone_else.exists()
