"""A replicated namespace's region DLQ as the DLQ tools see it (walstream.dlq.regions)."""

from __future__ import annotations

import pytest

from walstream.dlq import region_dlq
from walstream.errors import WalError
from walstream.testing.records import namespace_definition, registry_of

REGIONS = {
    "a": {"memcached": ["127.0.0.1:1"]},
    "b": {"memcached": ["127.0.0.1:2"], "bootstrap_servers": "10.0.0.9:9092"},
}


def namespaces():
    return registry_of(
        namespace_definition("plain"),
        namespace_definition("cache", replication={"regions": REGIONS}),
    )


def test_a_regions_dlq_is_its_namespace_seen_from_the_region_on_the_regions_cluster():
    cache = namespaces().get("cache")
    here = region_dlq(cache, "a", "127.0.0.1:9")
    # its DLQ the region's, its log (where a redrive sends) the region's topic
    assert (here.view.topics.dlq, here.view.topics.log) == (
        "wal.cache.region.a.dlq",
        "wal.cache.region.a",
    )
    assert here.servers == "127.0.0.1:9"  # the deployment's cluster
    assert here.view.name == "cache"
    away = region_dlq(cache, "b", "127.0.0.1:9")
    assert away.view.topics.dlq == "wal.cache.region.b.dlq"
    assert away.servers == "10.0.0.9:9092"  # the region's own cluster
    assert cache.topics.dlq == "wal.cache.dlq"  # the namespace itself is unchanged


def test_a_namespace_without_the_region_or_without_replication_says_so():
    registry = namespaces()
    with pytest.raises(WalError, match=r"no region 'z'.*its regions: a, b"):
        region_dlq(registry.get("cache"), "z", "127.0.0.1:9")
    with pytest.raises(WalError, match="replicates nothing"):
        region_dlq(registry.get("plain"), "a", "127.0.0.1:9")
