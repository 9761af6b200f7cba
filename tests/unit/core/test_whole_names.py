"""A name is checked whole: ``re.match`` with a ``$``-anchored pattern takes a trailing newline
(``$`` matches before it), so ``orders\\n`` passed as a namespace and built the topic
``wal.orders\\n.log``. Every pattern check of a name is a ``fullmatch``."""

from __future__ import annotations

import pytest

from walstream.core.auth import parse_token_document
from walstream.core.target_policy import parse_allowed_targets
from walstream.core.targets import parse_target
from walstream.errors import BadRequestError, ConfigError, TargetRejectedError
from walstream.namespaces.config import parse_namespace
from walstream.targets.kv import plain_table

DIGEST = "ab" * 32


def test_a_namespace_name_with_a_trailing_newline_is_refused():
    with pytest.raises(ConfigError, match="name"):
        parse_namespace({"name": "orders\n"})
    assert parse_namespace({"name": "orders"}).name == "orders"


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topic": "t\n"}, "target.topic"),
        ({"type": "wal", "namespace": "other\n"}, "target.namespace"),
    ],
)
def test_a_target_name_with_a_trailing_newline_is_refused(target, field):
    with pytest.raises(BadRequestError) as refused:
        parse_target(target)
    assert refused.value.field == field


def test_a_kv_table_with_a_trailing_newline_is_refused_before_any_sql():
    with pytest.raises(TargetRejectedError, match="plain identifier"):
        plain_table("items\n")
    assert plain_table("items") == "items"


@pytest.mark.parametrize(
    "allowed",
    [{"kafka_topics": ["t\n"]}, {"kv_tables": ["items\n"]}, {"wal": ["other\n"]}],
)
def test_allowed_target_names_with_a_trailing_newline_are_refused(allowed):
    with pytest.raises(BadRequestError):
        parse_allowed_targets(allowed)


@pytest.mark.parametrize(
    "entry",
    [
        {"sha256": DIGEST + "\n", "role": "admin"},
        {"sha256": DIGEST, "role": "admin", "name": "ops\n"},
    ],
)
def test_token_digests_and_names_with_a_trailing_newline_are_refused(entry):
    with pytest.raises(ConfigError):
        parse_token_document({"tokens": [entry]}, "tokens.json")
    whole = {k: v.rstrip("\n") if isinstance(v, str) else v for k, v in entry.items()}
    assert len(parse_token_document({"tokens": [whole]}, "tokens.json").entries()) == 1
