"""Token table, roles and redaction (walstream.core.auth): pure, no loop."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from walstream.core.auth import (
    Access,
    Principal,
    Role,
    TokenTable,
    authorize,
    bearer_token,
    hash_token,
    new_token,
    parse_token_file,
    parse_tokens_setting,
    redact_target,
    visible_reason,
)
from walstream.errors import ConfigError, ForbiddenError, UnauthorizedError

A_WRITER = Principal("a-writer", Role.WRITER, frozenset({"a"}))
A_ADMIN = Principal("a-admin", Role.NAMESPACE_ADMIN, frozenset({"a"}))
ADMIN = Principal("root", Role.ADMIN)


def test_new_tokens_are_random_and_stored_as_sha256():
    one, two = new_token(), new_token()
    assert one != two
    assert len(one) >= 40
    assert len(hash_token(one)) == 64
    assert hash_token(one) != hash_token(two)


def test_the_setting_lists_hashes_roles_namespaces_and_names():
    w, a = new_token(), new_token()
    table = parse_tokens_setting(f"{hash_token(w)}:writer:a,b:team-a ; {hash_token(a)}:admin")
    assert len(table) == 2
    assert table.lookup(w) == Principal("team-a", Role.WRITER, frozenset({"a", "b"}))
    admin = table.lookup(a)
    assert admin is not None
    assert admin.role is Role.ADMIN
    assert a not in admin.name
    assert hash_token(a) not in admin.name
    assert table.lookup(new_token()) is None


@pytest.mark.parametrize(
    "raw",
    [
        "nothex:writer:a",
        f"{'0' * 64}:root:a",  # unknown role
        f"{'0' * 64}:writer",  # a writer without namespaces
        f"{'0' * 64}:writer:a:bad name",
        f"{'0' * 64}",
    ],
)
def test_a_bad_setting_entry_is_a_config_error(raw):
    with pytest.raises(ConfigError):
        parse_tokens_setting(raw)


def test_the_secrets_file_is_toml_or_json():
    t = new_token()
    toml = f'[[tokens]]\nsha256 = "{hash_token(t)}"\nrole = "namespace-admin"\nnamespaces = ["a"]\n'
    assert parse_token_file(toml, "/s/tokens.toml").lookup(t) == Principal(
        f"namespace-admin-{hash_token(t)[:8]}", Role.NAMESPACE_ADMIN, frozenset({"a"})
    )
    json = f'{{"tokens": [{{"sha256": "{hash_token(t)}", "role": "admin", "name": "ops"}}]}}'
    assert parse_token_file(json, "/s/tokens.json").lookup(t) == Principal("ops", Role.ADMIN)
    for bad in ("tokens = [", '{"tokens": [{"sha256": "x", "role": "admin", "extra": 1}]}'):
        with pytest.raises(ConfigError):
            parse_token_file(bad, "/s/tokens.json" if bad.startswith("{") else "/s/t.toml")


def test_lookup_confirms_the_digest_with_hmac_compare_digest(monkeypatch):
    token = new_token()
    table = TokenTable({hash_token(token): A_WRITER})
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module walstream.core.auth calls
    assert table.lookup(token) is A_WRITER
    digest = bytes.fromhex(hash_token(token))
    assert calls == [(digest, digest)]
    # a token whose digest shares the 8-byte lookup prefix is refused by the compare
    forged = TokenTable({hash_token(token)[:16] + "0" * 48: A_WRITER})
    assert forged.lookup(token) is None
    assert len(calls) == 2


def test_bearer_header():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for header in (None, "", "Basic abc", "Bearer", "Bearer  "):
        with pytest.raises(UnauthorizedError):
            bearer_token(header)


@pytest.mark.parametrize(
    ("principal", "access", "namespace", "allowed"),
    [
        (A_WRITER, Access.WRITE, "a", True),
        (A_WRITER, Access.WRITE, "b", False),
        (A_WRITER, Access.READ, "a", True),
        (A_WRITER, Access.READ, "b", False),
        (A_WRITER, Access.ADMIN, "a", False),
        (A_WRITER, Access.ADMIN, None, False),
        (A_WRITER, Access.ANY, None, True),
        (A_ADMIN, Access.WRITE, "a", True),
        (A_ADMIN, Access.ADMIN, "a", True),
        (A_ADMIN, Access.ADMIN, "b", False),
        (A_ADMIN, Access.WRITE, "b", False),
        (A_ADMIN, Access.ADMIN, None, True),  # a listing: the handler filters
        (ADMIN, Access.ADMIN, "b", True),
        (ADMIN, Access.WRITE, "b", True),
    ],
)
def test_authorize(principal, access, namespace, allowed):
    if allowed:
        authorize(principal, access, namespace)
    else:
        with pytest.raises(ForbiddenError):
            authorize(principal, access, namespace)


def test_redaction_takes_out_header_values_and_url_userinfo_only():
    config: dict[str, Any] = {
        "name": "b",
        "target": {
            "type": "http",
            "url": "https://user:pw@example.com:8443/p?q=1",
            "headers": {"Authorization": "Bearer s3cret", "X-Key": "k"},
        },
        "allowed_targets": {"http": ["https://u:p@hooks.example.com"]},
        "description": "mail me at ops@example.com",
    }
    redacted = redact_target(config)
    assert redacted["target"] == {
        "type": "http",
        "url": "https://***@example.com:8443/p?q=1",
        "headers": {"Authorization": "***", "X-Key": "***"},
    }
    assert redacted["allowed_targets"] == {"http": ["https://***@hooks.example.com"]}
    assert redacted["description"] == "mail me at ops@example.com"
    assert config["target"]["headers"]["Authorization"] == "Bearer s3cret"  # not mutated


def test_dlq_reasons_are_for_the_namespace_admins():
    reason = "POST http://10.0.0.5/: http 500: internal secret"
    assert visible_reason("http_500", reason, A_ADMIN, "a") == reason
    assert visible_reason("http_500", reason, ADMIN, "a") == reason
    assert visible_reason("http_500", reason, None, "a") == reason  # auth off
    shown = visible_reason("http_500", reason, A_WRITER, "a")
    assert shown.startswith("http_500")
    assert "secret" not in shown
    assert "10.0.0.5" not in shown
