"""walstream.app hands the worker's settings to Faust (checked in a subprocess: importing the
module builds the worker app from the environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from walstream.errors import ConfigError
from walstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def worker_conf(**env: str) -> str:
    """Faust's broker_commit_interval of the worker app built from ``env``."""
    code = "from walstream.app import app; print(app.conf.broker_commit_interval)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "WALSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:9", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_commit_interval_reaches_faust():
    assert worker_conf(WALSTREAM_COMMIT_INTERVAL_S="0.5") == "0.5"
    assert worker_conf() == "2.8"  # Faust's own default, kept


def test_the_commit_interval_must_be_positive():
    with pytest.raises(ConfigError, match="WALSTREAM_COMMIT_INTERVAL_S"):
        Settings.from_env({"WALSTREAM_COMMIT_INTERVAL_S": "0"})


def test_make_runs_waiting_note_interval_is_a_setting():
    assert Settings().run_waiting_note_s == 30.0
    assert Settings.from_env({"WALSTREAM_RUN_WAITING_NOTE_S": "3"}).run_waiting_note_s == 3.0
    with pytest.raises(ConfigError, match="WALSTREAM_RUN_WAITING_NOTE_S"):
        Settings.from_env({"WALSTREAM_RUN_WAITING_NOTE_S": "0"})
