"""`make run`'s table state per embedded-broker run (walstream.dev.embedded_run_dir)."""

from __future__ import annotations

import os
import subprocess
import sys

from walstream.dev import EMBEDDED_DATA_SUBDIR, embedded_run_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_gets_an_empty_folder_and_folders_of_runs_that_are_gone_are_removed(tmp_path):
    root = tmp_path / EMBEDDED_DATA_SUBDIR
    gone = root / f"run-{_dead_pid()}"
    running = root / f"run-{os.getppid()}"  # a live process: another run's, left alone
    mine = root / "run-4242"
    for folder in (gone, running, mine, root / "notes"):
        (folder / "walstream-data").mkdir(parents=True)
    (tmp_path / "kv.sqlite").write_bytes(b"kept")

    run_dir = embedded_run_dir(tmp_path, 4242)

    assert run_dir == mine
    assert list(run_dir.iterdir()) == []  # a reused pid's leftovers are not this run's
    assert not gone.exists()
    assert (running / "walstream-data").is_dir()
    assert (root / "notes" / "walstream-data").is_dir()
    assert (tmp_path / "kv.sqlite").read_bytes() == b"kept"
