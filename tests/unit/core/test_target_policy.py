"""Target policy: a namespace's records name only its own target's destination, what its
allowed_targets list, and never one of walstream's own topics (issue 14 items 1 and 2)."""

from __future__ import annotations

import time

import pytest

from walstream.core.target_policy import (
    destination,
    parse_allowed_targets,
)
from walstream.errors import BadRequestError, ConfigError, TargetNotAllowedError
from walstream.namespaces.config import parse_namespace
from walstream.topology import default_topics, delay_topic, poison_topic, reserved_topics

APP = "walstream-x"
CONTROL = "walstream-x.namespaces"
#: A namespace with custom topic names: only the registry knows them.
OWNED = {"orders-log": "custom", "orders-dlq": "custom"}
RESERVED = reserved_topics(APP, CONTROL, OWNED.get)


def namespace(**extra):
    return parse_namespace(
        {"name": "attacker", "target": {"type": "kafka", "topic": "sink"}, **extra}
    )


def refused(ns, target):
    with pytest.raises(TargetNotAllowedError) as info:
        ns.target_policy.check(target, reserved=RESERVED)
    assert info.value.status == 403
    assert "allowed_targets" in info.value.reason  # the reason names the policy
    return info.value


@pytest.mark.parametrize(
    "topic",
    [
        CONTROL,
        f"{APP}-ordering-changelog",  # a table changelog (<app-id>-<table>-changelog)
        f"{APP}-__assignor-__leader",
        delay_topic(APP, 5_000),
        delay_topic(APP, 0),
        poison_topic(APP),
        default_topics("victim").log,
        default_topics("victim").retry,
        default_topics("victim").dlq,
        default_topics("attacker").log,  # its own log: a loop
        "orders-log",  # another namespace's custom-named topic
        "__consumer_offsets",
    ],
)
def test_walstreams_own_topics_are_never_a_target_whatever_the_lists_say(topic):
    for ns in (
        namespace(),
        namespace(allowed_targets={"kafka_topics": [topic, f"{topic[:1]}*"]}),
        namespace(allowed_targets={"kafka": ["other:9092"], "kafka_topics": [topic]}),
    ):
        for spec in (
            {"type": "kafka", "topic": topic},
            {"type": "kafka", "topic": topic, "bootstrap_servers": "other:9092"},
        ):
            error = refused(ns, spec)
            assert error.field == "target.topic"
            assert "walstream's own topics" in error.reason


def test_the_namespaces_own_target_is_refused_too_when_it_names_a_walstream_topic():
    ns = parse_namespace({"name": "a", "target": {"type": "kafka", "topic": CONTROL}})
    assert ns.target is not None
    assert refused(ns, ns.target.wire).field == "target.topic"


def test_record_level_targets_are_off_without_allowed_targets():
    ns = namespace()
    ns.target_policy.check({"type": "kafka", "topic": "sink"}, reserved=RESERVED)
    ns.target_policy.check({"type": "kafka", "topic": "sink", "key": "k2"}, reserved=RESERVED)
    for spec, field in (
        ({"type": "kafka", "topic": "other"}, "target.topic"),
        (
            {"type": "kafka", "topic": "sink", "bootstrap_servers": "b:1"},
            "target.bootstrap_servers",
        ),
        ({"type": "http", "url": "http://127.0.0.1:8080/x"}, "target.url"),
        ({"type": "kv", "table": "profiles", "key": "k"}, "target.table"),
        ({"type": "wal", "namespace": "victim"}, "target.namespace"),
    ):
        error = refused(ns, spec)
        assert error.field == field
        assert "record-level targets are off" in error.reason


def test_a_namespace_without_a_target_and_without_allowed_targets_names_nothing():
    ns = parse_namespace({"name": "bare"})
    for spec in ({"type": "kafka", "topic": "x"}, {"type": "kv", "table": "t", "key": "k"}):
        assert "record-level targets are off" in refused(ns, spec).reason


def test_keys_paths_and_ops_vary_freely_within_the_own_destination():
    kv = parse_namespace({"name": "kv", "target": {"type": "kv", "table": "profiles", "key": "a"}})
    kv.target_policy.check(
        {"type": "kv", "table": "profiles", "key": "b", "op": "delete"}, reserved=RESERVED
    )
    http = parse_namespace({"name": "h", "target": {"type": "http", "url": "http://a:8/in"}})
    http.target_policy.check({"type": "http", "url": "http://A:8/other?q"}, reserved=RESERVED)
    assert refused(kv, {"type": "kv", "table": "users", "key": "a"}).field == "target.table"


def test_allowed_targets_list_topics_tables_namespaces_and_clusters_by_name_or_prefix():
    ns = namespace(
        allowed_targets={
            "kafka": ["b1:9092"],
            "kafka_topics": ["audit", "team-a.*"],
            "kv_tables": ["profiles", "team_a_*"],
            "wal": ["orders-eu"],
        }
    )
    check = ns.target_policy.check
    for spec in (
        {"type": "kafka", "topic": "audit"},
        {"type": "kafka", "topic": "team-a.events"},
        {"type": "kafka", "topic": "team-a.events", "bootstrap_servers": "B1:9092"},
        {"type": "kafka", "topic": "sink"},  # its own target's topic
        {"type": "kv", "table": "profiles", "key": "k"},
        {"type": "kv", "table": "team_a_things", "key": "k"},
        {"type": "wal", "namespace": "orders-eu"},
    ):
        check(spec, reserved=RESERVED)
    for spec, field in (
        ({"type": "kafka", "topic": "team-b.events"}, "target.topic"),
        (
            {"type": "kafka", "topic": "audit", "bootstrap_servers": "b2:9092"},
            "target.bootstrap_servers",
        ),
        ({"type": "kv", "table": "users", "key": "k"}, "target.table"),
        ({"type": "wal", "namespace": "victim"}, "target.namespace"),
        (
            {"type": "wal", "namespace": "orders-eu", "bootstrap_servers": "e:1"},
            "target.bootstrap_servers",
        ),
        ({"type": "http", "url": "http://127.0.0.1:9/"}, "target.url"),
    ):
        assert refused(ns, spec).field == field


@pytest.mark.parametrize(
    "table",
    ["x; DROP TABLE app_users; --", 'x" AS SELECT * FROM app_users --', "x y", "", "1x", "x" * 64],
)
def test_a_kv_table_that_is_not_a_plain_identifier_is_refused_even_under_a_prefix(table):
    ns = parse_namespace(
        {
            "name": "kv",
            "target": {"type": "kv", "table": "x", "key": "k"},
            "allowed_targets": {"kv_tables": ["x*"]},
        }
    )
    assert refused(ns, {"type": "kv", "table": table, "key": "k"}).field == "target.table"


@pytest.mark.parametrize(
    ("allowed", "field"),
    [
        ({"kafka_topics": ["a b"]}, "allowed_targets.kafka_topics"),
        ({"kafka_topics": ["*"]}, "allowed_targets.kafka_topics"),
        ({"kv_tables": ["x;y"]}, "allowed_targets.kv_tables"),
        ({"kv_tables": "t"}, "allowed_targets.kv_tables"),
        ({"wal": ["Bad Name"]}, "allowed_targets.wal"),
        ({"tables": []}, "allowed_targets.tables"),
    ],
)
def test_bad_allowed_targets_are_refused_naming_the_field(allowed, field):
    with pytest.raises(BadRequestError) as info:
        parse_allowed_targets(allowed)
    assert info.value.field == field
    with pytest.raises(ConfigError):
        namespace(allowed_targets=allowed)


def test_allowed_targets_round_trip_through_the_namespace_json():
    ns = namespace(
        allowed_targets={"kafka_topics": ["t", "p.*"], "kv_tables": ["k_*"], "wal": ["b"]}
    )
    shown = ns.to_json()["allowed_targets"]
    assert shown == {
        "http": [],
        "kafka": [],
        "kafka_topics": ["t", "p.*"],
        "kv_tables": ["k_*"],
        "wal": ["b"],
    }
    assert parse_namespace(ns.to_json()) == ns
    # issue 13's shape still reads, and is written as it was
    old = namespace(allowed_targets={"http": ["http://h:1"]})
    assert old.to_json()["allowed_targets"] == {"http": ["http://h:1"], "kafka": []}


def test_a_new_namespace_version_decides_again():
    """Verdicts are kept per policy object, i.e. per namespace version: a narrowed policy
    refuses what the previous version allowed at once."""
    wide = namespace(allowed_targets={"kafka_topics": ["t"]})
    wide.target_policy.check({"type": "kafka", "topic": "t"}, reserved=RESERVED)
    narrow = namespace(allowed_targets={"kafka_topics": ["u"]})
    assert refused(narrow, {"type": "kafka", "topic": "t"}).field == "target.topic"


def test_destinations():
    assert destination({"type": "http", "url": "HTTP://H/x"}) == ("http", "http://h:80")
    assert destination({"type": "kafka", "topic": "t"}) == ("kafka", "", "t")
    assert destination({"type": "wal", "namespace": "n", "bootstrap_servers": "B:1, a:2"}) == (
        "wal",
        "a:2,b:1",
        "n",
    )
    assert destination({"type": "kv", "table": "t", "key": "k"}) == ("kv", "t")
    assert destination({"type": "nope"}) is None


def test_a_check_costs_about_a_microsecond():
    """Measured: the worker runs one check per attempt (cached verdicts per namespace version)."""
    ns = namespace(
        allowed_targets={"http": ["http://h:1"], "kafka_topics": ["t"], "kv_tables": ["k"]}
    )
    specs = [
        {"type": "http", "url": "http://h:1/x"},
        {"type": "kafka", "topic": "t", "key": "a"},
        {"type": "kv", "table": "k", "key": "a"},
        {"type": "kafka", "topic": "sink"},
    ]
    check = ns.target_policy.check
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        for spec in specs:
            check(spec, reserved=RESERVED)
    per_check_us = (time.perf_counter() - started) / (rounds * len(specs)) * 1e6
    print(f"target policy check: {per_check_us:.2f} us")  # noqa: T201 - the measured figure
    assert per_check_us < 20  # generous: a loaded shared machine
