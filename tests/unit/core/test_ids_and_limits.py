"""Settings, ids, the in-flight limiter, and core purity."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from walstream.core.ids import new_id
from walstream.core.limits import InFlightLimiter
from walstream.errors import ConfigError
from walstream.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_settings_from_env_parses_types():
    s = Settings.from_env(
        {
            "WALSTREAM_BOOTSTRAP_SERVERS": "a:1, b:2",
            "WALSTREAM_API_PORT": "9000",
            "WALSTREAM_WRITE_TIMEOUT_S": "2.5",
            "WALSTREAM_CORRECT_END_OFFSETS": "false",
            "UNRELATED": "x",
        }
    )
    assert s.bootstrap_list == ["a:1", "b:2"]
    assert s.api_port == 9000
    assert s.write_timeout_s == 2.5
    assert s.correct_end_offsets is False


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"WALSTREAM_API_PORT": "eighty"}, "WALSTREAM_API_PORT"),
        ({"WALSTREAM_MAX_IN_FLIGHT": "0"}, "WALSTREAM_MAX_IN_FLIGHT"),
        ({"WALSTREAM_CORRECT_END_OFFSETS": "maybe"}, "WALSTREAM_CORRECT_END_OFFSETS"),
        ({"WALSTREAM_STORE": "redis://"}, "WALSTREAM_STORE"),
        (
            {"WALSTREAM_MAX_IN_FLIGHT": "10", "WALSTREAM_MAX_BATCH_RECORDS": "11"},
            "WALSTREAM_MAX_BATCH_RECORDS",
        ),
        ({"WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "9"}, "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S"),
    ],
)
def test_settings_errors_name_the_variable(env, key):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.key == key


def test_no_bootstrap_servers_is_a_named_error():
    with pytest.raises(ConfigError, match="WALSTREAM_BOOTSTRAP_SERVERS"):
        _ = Settings.from_env({}).bootstrap_list


def test_ids_are_uuid7_and_sort_by_time():
    a = new_id(1_000, 0)
    b = new_id(1_001, (1 << 74) - 1)
    c = new_id(1_001, 0)
    assert len(a) == 32
    assert a[12] == "7"  # version nibble
    assert a[16] in "89ab"  # RFC variant
    assert a < c < b


def test_limiter_admits_up_to_the_limit_and_never_queues():
    limiter = InFlightLimiter(3)
    assert limiter.try_acquire(2)
    assert not limiter.try_acquire(2)
    assert limiter.try_acquire(1)
    assert not limiter.try_acquire(1)
    limiter.release(3)
    assert limiter.try_acquire(3)
    limiter.release(3)
    with pytest.raises(RuntimeError):
        limiter.release(1)
    with pytest.raises(ValueError, match="limit"):
        InFlightLimiter(0)


FORBIDDEN = {"faust", "aiokafka", "aiohttp", "mode"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
            if node.module.startswith("walstream"):
                found.add(node.module)
    return found


def test_core_imports_no_framework_even_indirectly():
    pure = [*(ROOT / "walstream" / "core").glob("*.py")]
    pure += [ROOT / "walstream" / m for m in ("records.py", "errors.py", "topology.py", "clock.py")]
    pure += [
        ROOT / "walstream" / "namespaces" / m
        for m in ("config.py", "registry.py", "replication.py")
    ]
    for path in pure:
        bad = _imports(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {bad}"
        for module in (m for m in _imports(path) if m.startswith("walstream.")):
            target = ROOT / (module.replace(".", "/") + ".py")
            assert target in pure or target.name == "__init__.py", f"{path.name} -> {module}"


def test_a_fetch_hands_out_at_most_a_keys_cap_and_never_an_unbounded_batch():
    """A partition paused for a hot key still hands out the rest of its fetched batch: the
    batch is bounded so that rest cannot fill the agent's buffer (aiokafka's default is
    unbounded). walstream.app passes it to Faust as broker_max_poll_records."""
    from walstream.settings import Settings

    assert Settings().fetch_max_records == 500
    assert Settings(deliver_max_key_pending=20).fetch_max_records == 20
