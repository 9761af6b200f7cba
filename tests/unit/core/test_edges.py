"""Edges of walstream/core/ the other unit tests do not reach (core/ is held to 100 % branch
coverage in make test): each test names the decision it pins."""

from __future__ import annotations

import pytest

from walstream.core.auth import (
    Principal,
    Role,
    parse_token_document,
    parse_tokens_setting,
    redact_target,
)
from walstream.core.exact import unkept_in_value
from walstream.core.idle_cache import IdleCache
from walstream.core.replay_request import parse_replay_request
from walstream.core.retention import config_drift, retry_horizon_ms
from walstream.core.retry import bound_history, history_bytes
from walstream.core.target_policy import ReservedTopics, TargetPolicy, origin_of
from walstream.core.targets import parse_target
from walstream.core.validate import exact_body, invalid_json
from walstream.errors import BadRequestError, ConfigError, TargetNotAllowedError
from walstream.records import AttemptError

DIGEST = "ab" * 32
NOW = 1_800_000_000_000

# -- auth ------------------------------------------------------------------------------------


def test_a_writer_writes_only_its_namespaces_and_an_admin_everywhere():
    writer = Principal("w", Role.WRITER, frozenset({"orders"}))
    assert writer.can_write("orders")
    assert not writer.can_write("billing")
    assert Principal("a", Role.ADMIN).can_write("billing")


@pytest.mark.parametrize(
    ("entry", "names"),
    [
        ({"sha256": DIGEST, "role": "writer", "namespaces": "orders"}, "namespaces"),
        ({"sha256": DIGEST, "role": "writer", "namespaces": ["orders", ""]}, "namespaces"),
        ({"sha256": DIGEST, "role": "admin", "name": "no spaces"}, "name must be"),
        ({"sha256": DIGEST, "role": "admin", "name": 7}, "name must be"),
    ],
)
def test_a_token_entry_with_bad_namespaces_or_name_is_refused(entry, names):
    with pytest.raises(ConfigError, match=names):
        parse_token_document({"tokens": [entry]}, "tokens.json")


@pytest.mark.parametrize("document", [[], {"tokens": {}}, {"tokens": "x"}])
def test_a_token_document_must_hold_a_tokens_list(document):
    with pytest.raises(ConfigError, match="expected a 'tokens' list"):
        parse_token_document(document, "tokens.json")


def test_each_token_in_the_document_is_an_object():
    with pytest.raises(ConfigError, match=r"tokens\[0\].*expected a table/object"):
        parse_token_document({"tokens": ["abc"]}, "tokens.json")


def test_a_named_token_keeps_its_name():
    table = parse_tokens_setting(f"{DIGEST}:admin::ops-bot")
    assert [p.name for p in table.entries().values()] == ["ops-bot"]


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x@y",  # not a URL urlsplit takes: shown as it is
        "mailto://nobody",  # no userinfo
        "see //notes @ 5",  # no netloc
    ],
)
def test_a_string_that_is_no_url_with_userinfo_is_shown_as_it_is(url):
    assert redact_target({"target": {"url": url}}) == {"target": {"url": url}}


def test_userinfo_of_a_url_is_redacted():
    shown = redact_target({"target": {"url": "https://u:p@host/x"}})
    assert shown == {"target": {"url": "https://***@host/x"}}


# -- exact numbers ---------------------------------------------------------------------------


def test_booleans_are_not_numbers_the_log_would_change():
    assert unkept_in_value({"a": True, "b": [False, 1]}) is None
    assert unkept_in_value([True, 2**64]) is not None


# -- idle cache ------------------------------------------------------------------------------


def test_the_idle_cache_says_what_it_holds():
    cache: IdleCache[str, int] = IdleCache(ttl_ms=10, max_size=2)
    cache.put("a", 1, 0)
    assert "a" in cache
    assert "b" not in cache
    assert list(cache.items()) == [("a", 1)]


# -- replay requests -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, 1.5, [1], {"t": 1}])
def test_a_replay_time_of_another_type_is_refused(value):
    with pytest.raises(BadRequestError) as info:
        parse_replay_request({"from": value, "to": NOW}, NOW)
    assert info.value.field == "from"
    assert "string time" in info.value.reason


def test_a_replay_skips_at_most_ten_thousand_ids():
    ids = [f"id-{n}" for n in range(10_001)]
    with pytest.raises(BadRequestError) as info:
        parse_replay_request({"from": 0, "to": NOW, "skip_ids": ids}, NOW)
    assert info.value.field == "skip_ids"
    parsed = parse_replay_request({"from": 0, "to": NOW, "skip_ids": ids[:10_000]}, NOW)
    assert len(parsed.skip_ids) == 10_000


# -- retention -------------------------------------------------------------------------------


def test_a_retry_horizon_that_never_reaches_the_cap_is_every_backoff():
    horizon = retry_horizon_ms(
        max_attempts=3, base_ms=10, multiplier=2.0, cap_ms=1_000, jitter=0.0, retry_budget_ms=None
    )
    assert horizon == 10 + 20 + 40


def test_a_retention_the_broker_reports_as_no_number_is_drift():
    drift = config_drift("t", {"retention.ms": "-1"}, {"retention.ms": "forever"})
    assert [(d.key, d.actual) for d in drift] == [("retention.ms", "forever")]


# -- retry history ---------------------------------------------------------------------------


def _entry(n: int, message: str = "boom") -> AttemptError:
    return AttemptError(attempt=n, at_ms=NOW + n, error_class="timeout", message=message)


def test_a_first_entry_over_the_bound_is_dropped_and_the_latest_kept():
    history = (_entry(1, "x" * 400), _entry(2), _entry(3))
    bound = history_bytes(history[1:]) + 1  # bound_history counts a comma per entry
    assert bound_history(history, bound) == history[1:]


def test_the_latest_entries_are_kept_until_the_next_one_would_not_fit():
    history = tuple(_entry(n) for n in range(1, 6))
    bound = history_bytes((history[0], history[3], history[4])) + 1
    assert bound_history(history, bound) == (history[0], history[3], history[4])


# -- target policy ---------------------------------------------------------------------------


def test_a_url_whose_port_is_no_number_has_no_origin():
    assert origin_of("http://host:port/x") is None


NO_TOPICS = ReservedTopics()


@pytest.mark.parametrize(
    ("policy", "target", "named"),
    [
        (
            TargetPolicy(http_origins=frozenset({"http://a:80"})),
            {"type": "http", "url": "http://a/x"},
            "http origin 'http://a:80'",
        ),
        (
            TargetPolicy(kafka_clusters=frozenset({"b1:9092"}), kafka_topics=frozenset({"t"})),
            {"type": "kafka", "topic": "t", "bootstrap_servers": "B1:9092"},
            "kafka topic 't' on b1:9092",
        ),
        (
            TargetPolicy(kv_tables=frozenset({"items"})),
            {"type": "kv", "table": "items", "key": "k"},
            "kv table 'items'",
        ),
        (
            TargetPolicy(wal_namespaces=frozenset({"eu"})),
            {"type": "wal", "namespace": "eu"},
            "wal namespace 'eu'",
        ),
    ],
)
def test_lists_without_record_targets_still_allow_only_the_own_target(policy, target, named):
    """A policy whose lists name a destination but record-level targets are off (no
    allowed_targets): the destination is refused, named, as off."""
    with pytest.raises(TargetNotAllowedError) as info:
        policy.check(target, reserved=NO_TOPICS)
    assert named in info.value.reason
    assert "record-level targets are off" in info.value.reason


def test_the_verdicts_kept_per_policy_start_over_past_their_bound():
    policy = TargetPolicy(kafka_topic_prefixes=("t",), record_targets=True)
    for n in range(4_097):
        policy.check({"type": "kafka", "topic": f"t{n}"}, reserved=NO_TOPICS)
    assert len(policy._seen) == 1  # cleared at 4,096, then the last one kept


def test_the_own_target_of_each_kind_joins_the_lists():
    base = TargetPolicy()
    assert base.with_target({"type": "nope"}) is base
    wal = base.with_target({"type": "wal", "namespace": "eu", "bootstrap_servers": "B:1"})
    assert (wal.kafka_clusters, wal.wal_namespaces) == ({"b:1"}, {"eu"})
    assert wal.own == ("wal", "b:1", "eu")
    wal.check({"type": "wal", "namespace": "eu", "bootstrap_servers": "b:1"}, reserved=NO_TOPICS)


# -- targets ---------------------------------------------------------------------------------


def test_a_target_option_over_its_length_is_refused():
    with pytest.raises(BadRequestError) as info:
        parse_target({"type": "kafka", "topic": "t", "bootstrap_servers": "b" * 1025})
    assert info.value.field == "target.bootstrap_servers"
    assert "at most 1024" in info.value.reason


def test_an_http_timeout_and_a_kv_op_are_kept():
    http = parse_target({"type": "http", "url": "http://a/", "timeout_ms": 5_000})
    assert http.options["timeout_ms"] == 5_000
    kv = parse_target({"type": "kv", "table": "items", "key": "k", "op": "delete"})
    assert kv.options["op"] == "delete"


# -- validation ------------------------------------------------------------------------------


def test_a_number_orjson_refuses_outside_a_payload_names_its_whole_field():
    assert invalid_json(b'{"records": [1, 1e400]}', "number").field == "records[1]"
    assert invalid_json(b"1e400", "number").field == "body"


def test_a_body_nested_deeper_than_the_exact_decoder_goes_is_a_400():
    raw = b"[" * 100_000 + b"1e400" + b"]" * 100_000
    with pytest.raises(BadRequestError) as info:
        exact_body(raw)
    assert info.value.field == "body"
    assert "nests too deep" in info.value.reason
