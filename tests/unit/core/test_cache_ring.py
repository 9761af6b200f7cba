"""Rendezvous hashing of keys over a region's memcached servers (issue 17)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from walstream.core.cache_ring import server_for

SERVERS = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
KEYS = [b"key-%d" % i for i in range(3_000)]


def test_the_choice_does_not_depend_on_the_list_order():
    for key in KEYS[:200]:
        assert server_for(key, SERVERS) == server_for(key, list(reversed(SERVERS)))


def test_keys_spread_over_the_servers():
    counts = Counter(server_for(key, SERVERS) for key in KEYS)
    assert set(counts) == set(SERVERS)
    assert min(counts.values()) > len(KEYS) / len(SERVERS) * 0.85


def test_removing_a_server_moves_only_its_keys():
    before = {key: server_for(key, SERVERS) for key in KEYS}
    after = {key: server_for(key, SERVERS[:2]) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved
    assert all(before[key] == SERVERS[2] for key in moved)


def test_the_choice_is_the_same_in_another_process():
    # Python's hash() is salted per process: a stable hash gives the same answer anywhere
    code = (
        "from walstream.core.cache_ring import server_for;"
        f"print(','.join(server_for(b'key-%d' % i, {SERVERS!r}) for i in range(50)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    here = ",".join(server_for(b"key-%d" % i, SERVERS) for i in range(50))
    assert other.stdout.strip() == here


def test_a_region_needs_a_server():
    with pytest.raises(ValueError, match="at least one"):
        server_for(b"k", [])
