"""Which replication stages a worker runs (walstream.replication.stages), and the worker
command's --region option."""

from __future__ import annotations

import click
import pytest

from walstream.cli.main import region_option
from walstream.namespaces.replication import parse_replication
from walstream.replication.fanout import FanOut, fanout_regions_of, fanouts
from walstream.replication.stages import ReplicationStages, StageKey
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings
from walstream.testing.records import namespace_definition, registry_of

REGIONS = {
    "a": {"memcached": ["127.0.0.1:1"]},
    "b": {"memcached": ["127.0.0.1:2"]},
    # a region on a Kafka cluster of its own
    "c": {"memcached": ["127.0.0.1:3"], "bootstrap_servers": "127.0.0.1:19092"},
}
SETTINGS = Settings(bootstrap_servers="127.0.0.1:9", auth=False)


def registry():
    return registry_of(
        namespace_definition("plain"),
        namespace_definition("cache", replication={"regions": REGIONS}),
    )


def test_a_worker_runs_the_fanouts_and_a_writer_per_region_of_each_replicated_namespace():
    stages = ReplicationStages(SETTINGS)
    stages.on_namespaces(registry())
    # one fan-out to the regions on the deployment's cluster, one to c on its own cluster
    assert set(stages._wanted) == {
        ("cache", None, "fanout"),
        ("cache", "c", "fanout"),
        ("cache", "a", "writer"),
        ("cache", "b", "writer"),
        ("cache", "c", "writer"),
    }
    log, replication = stages._wanted[StageKey("cache", None, "fanout")]
    assert log == "wal.cache.log"
    shared = stages._make(StageKey("cache", None, "fanout"), log, replication)
    own = stages._make(StageKey("cache", "c", "fanout"), log, replication)
    assert isinstance(shared, FanOut)
    assert isinstance(own, FanOut)
    # each reads the log in a group of its own and copies to its regions' topics only
    assert (shared.topic, shared.group_id, shared.targets) == (
        "wal.cache.log",
        "walstream.cache.fanout",
        ["a", "b"],
    )
    assert (own.topic, own.group_id, own.targets) == (
        "wal.cache.log",
        "walstream.cache.fanout.c",
        ["c"],
    )
    writer = stages._make(StageKey("cache", "b", "writer"), log, replication)
    assert isinstance(writer, RegionWriter)
    assert (writer.topic, writer.group_id) == ("wal.cache.region.b", "walstream.cache.region.b")


def test_a_fanout_per_cluster_of_the_regions():
    replication = registry().get("cache").replication
    assert replication is not None
    assert fanout_regions_of(replication) == [None, "c"]
    made = fanouts(SETTINGS, namespace="cache", log_topic="wal.cache.log", replication=replication)
    assert [(f.region, f.group_id, f.targets) for f in made] == [
        (None, "walstream.cache.fanout", ["a", "b"]),
        ("c", "walstream.cache.fanout.c", ["c"]),
    ]
    # every region on a cluster of its own: no shared fan-out
    apart = parse_replication(
        {
            "regions": {
                r: {"memcached": [f"127.0.0.1:{n}"], "bootstrap_servers": f"127.0.0.1:{9000 + n}"}
                for n, r in enumerate("ab", 1)
            }
        }
    )
    assert apart is not None
    assert fanout_regions_of(apart) == ["a", "b"]
    with pytest.raises(ValueError, match="region 'd'"):
        FanOut(
            SETTINGS,
            namespace="cache",
            log_topic="wal.cache.log",
            replication=replication,
            region="d",
        )


def test_a_region_deployment_runs_only_its_regions_writers():
    # the fan-outs (to c too) run in the main worker: they read the log on its cluster
    stages = ReplicationStages(SETTINGS, region="c")
    stages.on_namespaces(registry())
    assert list(stages._wanted) == [("cache", "c", "writer")]


@pytest.mark.parametrize(
    ("args", "region"),
    [
        ([], None),
        (["-l", "info"], None),
        (["--region", "b"], "b"),
        (["--region=c", "-l", "x"], "c"),
    ],
)
def test_the_worker_command_reads_its_region(args, region):
    assert region_option(args) == region


def test_aregion_option_needs_a_name():
    with pytest.raises(click.UsageError):
        region_option(["--region"])


def test_the_worker_is_not_ready_until_every_wanted_stage_has_joined_its_group():
    stages = ReplicationStages(SETTINGS)
    stages.on_namespaces(registry())
    everything = ["cache/a", "cache/b", "cache/c", "cache/fanout", "cache/fanout/c"]
    assert stages.waiting() == everything  # none runs yet
    for key, (log, replication) in stages._wanted.items():
        stages.running[key] = (replication, stages._make(key, log, replication))
    assert stages.waiting() == everything  # running, but no assignment came yet
    for _, stage in stages.running.values():
        stage.joined = True
    stages.running[StageKey("cache", "b", "writer")][1].joined = False
    stages.running[StageKey("cache", "c", "fanout")][1].joined = False
    assert stages.waiting() == ["cache/b", "cache/fanout/c"]
    stages.running[StageKey("cache", "b", "writer")][1].joined = True
    stages.running[StageKey("cache", "c", "fanout")][1].joined = True
    assert stages.waiting() == []
    # a stage made from another config (replication changed) is not the one wanted
    other = registry_of(
        namespace_definition(
            "cache", replication={"regions": {**REGIONS, "d": {"memcached": ["127.0.0.1:4"]}}}
        )
    )
    stages.on_namespaces(other)
    assert stages.waiting() == [
        "cache/a",
        "cache/b",
        "cache/c",
        "cache/d",
        "cache/fanout",
        "cache/fanout/c",
    ]
