"""walstream.app hands the worker's settings to Faust (checked in a subprocess: importing the
module builds the worker app from the environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from walstream.errors import ConfigError
from walstream.namespaces.config import parse_namespace
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


def test_mutation_limits_come_from_their_settings():
    limits = Settings().mutation_limits()
    assert (limits.operations_max, limits.txn_bytes_max) == (1_000, 16 * 1024 * 1024)
    assert (limits.chunk_bytes, limits.idempotency_window_ms) == (256 * 1024, 86_400_000)
    assert limits.completion_timeout_ms == 600_000
    env = {
        "WALSTREAM_MUTATION_OPERATIONS_MAX": "2000",
        "WALSTREAM_MUTATION_TXN_BYTES_MAX": "1048576",
        "WALSTREAM_MUTATION_CHUNK_BYTES": "65536",
        "WALSTREAM_MUTATION_IDEMPOTENCY_WINDOW_S": "172800",
    }
    got = Settings.from_env(env).mutation_limits()
    assert (got.operations_max, got.txn_bytes_max, got.chunk_bytes) == (2000, 1 << 20, 1 << 16)
    assert got.idempotency_window_ms == 172_800_000


def test_mutation_limits_take_the_namespaces_completion_timeout():
    ns = parse_namespace({"name": "orders", "mutations": {"completion_timeout_s": 30}})
    assert Settings().mutation_limits(ns).completion_timeout_ms == 30_000
    plain = parse_namespace({"name": "orders"})
    assert Settings().mutation_limits(plain).completion_timeout_ms == 600_000


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("WALSTREAM_MUTATION_OPERATIONS_MAX", "0"),
        ("WALSTREAM_MUTATION_OPERATIONS_MAX", "10001"),  # the state's cap (wire.OPERATIONS_CAP)
        ("WALSTREAM_MUTATION_TXN_BYTES_MAX", "0"),
        ("WALSTREAM_MUTATION_CHUNK_BYTES", "600000"),  # over wire.CHUNK_BYTES_CAP
        ("WALSTREAM_MUTATION_CHUNK_BYTES", "1024"),  # 16 MiB in more than 1,024 chunks
        ("WALSTREAM_MUTATION_IDEMPOTENCY_WINDOW_S", "86399"),  # under a day
        ("WALSTREAM_MUTATION_OPERATIONS_MAX", "many"),
        ("WALSTREAM_WORKER_URL", "127.0.0.1:6066"),
    ],
)
def test_a_bad_mutation_setting_names_its_variable(var, raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({var: raw})
    assert caught.value.key == var


def test_the_worker_url_defaults_to_the_workers_web_server():
    assert Settings().worker_base_url == "http://127.0.0.1:6066"
    custom = Settings(worker_web_host="10.0.0.5", worker_web_port=7000)
    assert custom.worker_base_url == "http://10.0.0.5:7000"
    assert Settings(worker_web_host="0.0.0.0").worker_base_url == "http://127.0.0.1:6066"
    env = {"WALSTREAM_WORKER_URL": "http://workers.internal:6066/"}
    assert Settings.from_env(env).worker_base_url == "http://workers.internal:6066"
