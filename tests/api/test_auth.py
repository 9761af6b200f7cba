"""Bearer-token auth on the API (issue 14 "Auth" and "Secrets"): 401 without a token, 403 with a
wrong one, a namespace's token reaches only its namespace, secrets are redacted."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys

import orjson
import pytest

from walstream.api.app import create_api
from walstream.api.auth import ROUTE_ACCESS
from walstream.api.deps import ApiDeps
from walstream.api.openapi import openapi_document
from walstream.clock import FakeClock
from walstream.core.auth import Access, Role, hash_token, parse_tokens_setting
from walstream.core.dlq import entry_headers, parse_dlq_record
from walstream.dlq import DlqPage
from walstream.errors import ServiceUnavailableError
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import AttemptError, encode_envelope
from walstream.settings import Settings
from walstream.testing import (
    API_TOKENS,
    UNKNOWN_TOKEN,
    api_deps,
    api_tokens_setting,
    bearer,
    registry_of,
)
from walstream.testing.records import envelope

TOKENS = API_TOKENS
SETTING = api_tokens_setting()
UPSTREAM_SECRET = "internal admin token is s3cr3t-from-upstream"
HEADER_SECRET = "Bearer target-header-secret"
USERINFO_SECRET = "hunter2"


def _record(ns: str) -> bytes:
    """The dead record: its target's header a secret, its attempt history quoting upstream."""
    error = AttemptError(1, 1, "http_500", f"http 500: {UPSTREAM_SECRET}")
    record = envelope(ns=ns)._replace(
        target={"type": "http", "url": "http://127.0.0.1:9/", "headers": {"X-Key": HEADER_SECRET}},
        history=(error,),
    )
    return encode_envelope(record)


def _entry(ns: str):
    headers = entry_headers(
        namespace=ns,
        reason=f"POST http://10.0.0.5/: http 500: {UPSTREAM_SECRET}",
        error_class="http_500",
        source=f"wal.{ns}.log[0]@7",
        attempts=3,
        dead_at_ms=1,
        behind=[],
    )
    return parse_dlq_record(b"rec-1", _record(ns), headers, partition=0, offset=1)


class _Redrives:
    def status(self, name):
        return None

    async def cancel(self, name):
        return None


class FakeDlq:
    """The DLQ endpoints' collaborator: one open entry (rec-1) per namespace, no redrives."""

    redrives = _Redrives()

    def running_redrives(self, region, servers=None):
        return self.redrives

    async def page(self, topic, selection, *, limit, after, servers=None):
        ns = topic.split(".")[1]
        return DlqPage(entries=[_entry(ns)], open=1, matching=1, next=None)

    async def entry(self, topic, record_id, *, servers=None):
        return _entry(topic.split(".")[1]) if record_id == "rec-1" else None

    async def discard(self, ns, selection, *, region=None, servers=None):
        return len(selection.ids & {"rec-1"})

    async def selected(self, topic, selection):
        raise ServiceUnavailableError("no redrive in this test")

    async def start_redrive(self, ns, selection, *, rate, target, region=None, servers=None):
        raise ServiceUnavailableError("no redrive in this test")


def _registry() -> NamespaceRegistry:
    registry = registry_of(
        {"name": "a", "target": {"type": "kafka", "topic": "a.out"}},
        {
            "name": "b",
            "target": {
                "type": "http",
                "url": f"http://svc:{USERINFO_SECRET}@127.0.0.1:9/hook",
                "headers": {"Authorization": HEADER_SECRET, "X-Api-Key": "k-123"},
            },
        },
    )
    return registry


def clock_of(deps: ApiDeps) -> FakeClock:
    assert isinstance(deps.clock, FakeClock)
    return deps.clock


def producer_of(deps: ApiDeps) -> MemoryLogProducer:
    assert isinstance(deps.producer, MemoryLogProducer)
    return deps.producer


def _deps(**settings) -> ApiDeps:
    return api_deps(
        Settings(max_in_flight=4, **({"tokens": SETTING} | settings)),
        _registry(),
        dlq=FakeDlq(),
    )


@pytest.fixture
async def client(api_client):
    return await api_client(create_api(_deps()))


WRITE = ("POST", "/v1/namespaces/a/log", {"payload": 1})
BATCH = ("POST", "/v1/namespaces/a/log:batch", {"records": [{"payload": 1}]})
DLQ = ("GET", "/v1/namespaces/a/dlq", None)
REDRIVE: tuple[str, str, dict | None] = ("POST", "/v1/namespaces/a/dlq:redrive", {})
REDRIVE_STATUS = ("GET", "/v1/namespaces/a/dlq:redrive", None)
REDRIVE_CANCEL = ("DELETE", "/v1/namespaces/a/dlq:redrive", None)
SHOW = ("GET", "/v1/namespaces/a", None)
DLQ_ENTRY = ("GET", "/v1/namespaces/a/dlq/rec-1", None)
DISCARD = ("POST", "/v1/namespaces/a/dlq:discard", {"ids": ["rec-1"]})
LIST = ("GET", "/v1/namespaces", None)
OPENAPI = ("GET", "/v1/openapi.json", None)

# (request, token) -> status. An admitted request answers what its handler answers: the fake
# DLQ has no redrive (404) and refuses to start one (503).
CASES = [
    *[(WRITE, who, 200) for who in ("a_writer", "a_admin", "admin")],
    *[(WRITE, who, 403) for who in ("b_writer", "b_admin", "unknown")],
    (WRITE, None, 401),
    *[(BATCH, who, 200) for who in ("a_writer", "a_admin", "admin")],
    *[(BATCH, who, 403) for who in ("b_writer", "b_admin", "unknown")],
    (BATCH, None, 401),
    *[(DLQ, who, 200) for who in ("a_writer", "a_admin", "admin")],
    *[(DLQ, who, 403) for who in ("b_writer", "b_admin", "unknown")],
    (DLQ, None, 401),
    *[(DLQ_ENTRY, who, 200) for who in ("a_writer", "a_admin", "admin")],
    *[(DLQ_ENTRY, who, 403) for who in ("b_writer", "b_admin", "unknown")],
    (DLQ_ENTRY, None, 401),
    *[(DISCARD, who, 200) for who in ("a_admin", "admin")],
    *[(DISCARD, who, 403) for who in ("a_writer", "b_writer", "b_admin", "unknown")],
    (DISCARD, None, 401),
    *[(REDRIVE, who, 503) for who in ("a_admin", "admin")],
    *[(REDRIVE, who, 403) for who in ("a_writer", "b_writer", "b_admin", "unknown")],
    (REDRIVE, None, 401),
    *[(REDRIVE_STATUS, who, 404) for who in ("a_writer", "a_admin", "admin")],
    *[(REDRIVE_STATUS, who, 403) for who in ("b_writer", "b_admin", "unknown")],
    *[(REDRIVE_CANCEL, who, 404) for who in ("a_admin", "admin")],
    *[(REDRIVE_CANCEL, who, 403) for who in ("a_writer", "b_writer", "b_admin")],
    (REDRIVE_CANCEL, None, 401),
    *[(SHOW, who, 200) for who in ("a_admin", "admin")],
    *[(SHOW, who, 403) for who in ("a_writer", "b_writer", "b_admin", "unknown")],
    (SHOW, None, 401),
    *[(LIST, who, 200) for who in ("a_admin", "b_admin", "admin")],
    *[(LIST, who, 403) for who in ("a_writer", "b_writer", "unknown")],
    (LIST, None, 401),
    *[(OPENAPI, who, 200) for who in ("a_writer", "b_admin", "admin")],
    (OPENAPI, None, 401),
    (("GET", "/healthz", None), None, 200),
    (("GET", "/readyz", None), None, 200),
]


@pytest.mark.parametrize(
    ("request_", "who", "status"),
    CASES,
    ids=[f"{r[0]} {r[1]} as {who}" for r, who, _ in CASES],
)
async def test_status_per_route_and_token(client, request_, who, status):
    method, path, body = request_
    kwargs = {"json": body} if body is not None else {}
    response = await client.request(method, path, headers=bearer(who), **kwargs)
    assert response.status == status, await response.text()
    if status in (401, 403):
        body = await response.json()
        assert body["error"] == ("UnauthorizedError" if status == 401 else "ForbiddenError")
        assert body["durable"] == "FALSE"
        assert body["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_refused_write_writes_nothing_and_names_the_namespace(api_client):
    deps = _deps()
    client = await api_client(create_api(deps))
    response = await client.post(
        "/v1/namespaces/b/log", json={"payload": 1}, headers=bearer("a_writer")
    )
    assert response.status == 403
    assert "'b'" in (await response.json())["message"]
    assert producer_of(deps).sent == []


async def test_every_route_but_health_refuses_without_a_token(api_client):
    """Walks the router: a route added later is covered (and closed unless listed open)."""
    api = create_api(_deps())
    client = await api_client(api)
    routes = api.router.routes()
    assert len(routes) >= 11
    open_routes = {key for key, access in ROUTE_ACCESS.items() if access is Access.OPEN}
    for route in routes:
        path = route.pattern.replace("{namespace}", "a").replace("{id}", "rec-1")
        path = path.replace("{txn_id}", "t-1").replace("{seq}", "0")
        assert "{" not in path, route
        if (route.method, route.pattern) in open_routes:
            response = await client.request(route.method, path)
            assert response.status == 200, route
            continue
        response = await client.request(route.method, path, data=b"{}")
        assert response.status == 401, (route, await response.text())
        response = await client.request(route.method, path, data=b"{}", headers=bearer("unknown"))
        assert response.status == 403, route
        if "{namespace}" in route.pattern:  # another namespace's tokens get nothing here
            for who in ("b_writer", "b_admin"):
                response = await client.request(route.method, path, data=b"{}", headers=bearer(who))
                assert response.status == 403, (route, who)
    assert {p for _, p in open_routes} <= {"/healthz", "/readyz", "/metrics"}


async def test_auth_off_opens_every_route(api_client):
    client = await api_client(create_api(_deps(auth=False)))
    response = await client.post("/v1/namespaces/a/log", json={"payload": 1})
    assert response.status == 200


async def test_namespace_endpoints_redact_target_headers_and_url_userinfo(client):
    response = await client.get("/v1/namespaces/b", headers=bearer("admin"))
    assert response.status == 200
    text = await response.text()
    for secret in (HEADER_SECRET, "k-123", USERINFO_SECRET, "svc:"):
        assert secret not in text
    target = orjson.loads(text)["target"]
    assert target["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert target["url"] == "http://***@127.0.0.1:9/hook"

    listed = await client.get("/v1/namespaces", headers=bearer("admin"))
    text = await listed.text()
    assert {ns["name"] for ns in orjson.loads(text)["namespaces"]} == {"a", "b"}
    for secret in (HEADER_SECRET, "k-123", USERINFO_SECRET):
        assert secret not in text


async def test_a_namespace_admin_lists_only_its_namespaces(client):
    response = await client.get("/v1/namespaces", headers=bearer("b_admin"))
    assert [ns["name"] for ns in (await response.json())["namespaces"]] == ["b"]


async def test_dlq_reasons_quoting_upstream_are_shown_to_admins_only(client):
    writer = await (await client.get("/v1/namespaces/a/dlq", headers=bearer("a_writer"))).json()
    [entry] = writer["entries"]
    assert entry["error_class"] == "http_500"
    assert UPSTREAM_SECRET not in orjson.dumps(writer).decode()
    assert "10.0.0.5" not in entry["reason"]
    assert entry["reason"].startswith("http_500")
    for who in ("a_admin", "admin"):
        admin = await (await client.get("/v1/namespaces/a/dlq", headers=bearer(who))).json()
        assert UPSTREAM_SECRET in admin["entries"][0]["reason"]


async def test_a_dlq_entry_shows_upstream_quotes_to_admins_only_and_no_target_secret(client):
    """GET /dlq/{id}: the entry's reason and its record's attempt history are a writer's error
    classes only; the record's target headers are nobody's."""
    path = "/v1/namespaces/a/dlq/rec-1"
    shown = await client.get(path, headers=bearer("a_writer"))
    assert shown.status == 200, await shown.text()
    text = await shown.text()
    assert UPSTREAM_SECRET not in text
    assert HEADER_SECRET not in text
    body = orjson.loads(text)
    assert body["reason"].startswith("http_500")
    assert body["record"]["history"][0]["message"].startswith("http_500")
    assert body["record"]["target"]["headers"] == {"X-Key": "***"}
    for who in ("a_admin", "admin"):
        text = await (await client.get(path, headers=bearer(who))).text()
        body = orjson.loads(text)
        assert UPSTREAM_SECRET in body["reason"]
        assert UPSTREAM_SECRET in body["record"]["history"][0]["message"]
        assert HEADER_SECRET not in text
    missing = await client.get("/v1/namespaces/a/dlq/rec-2", headers=bearer("admin"))
    assert missing.status == 404
    assert "rec-2" in (await missing.json())["message"]


async def test_the_secrets_file_is_reloaded_without_a_restart(api_client, tmp_path, caplog):
    old, new = "wal_old-0123456789abcdefghijklmnopqrstuvwxyzABCD", "wal_new-0123456789abcdefg"
    path = tmp_path / "tokens.toml"

    def write(token: str, role: str = "writer", ns: str = "a") -> None:
        staged = tmp_path / "tokens.tmp"  # replaced as a mounted secret is (new inode)
        staged.write_text(
            f'[[tokens]]\nsha256 = "{hash_token(token)}"\nrole = "{role}"\n'
            f'namespaces = ["{ns}"]\nname = "team-{ns}"\n'
        )
        os.replace(staged, path)

    write(old)
    deps = _deps(tokens=None, auth_file=str(path), auth_file_poll_s=2.0)
    client = await api_client(create_api(deps))

    async def status(token: str) -> int:
        response = await client.post(
            "/v1/namespaces/a/log",
            json={"payload": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status

    assert await status(old) == 200
    assert await status(new) == 403
    write(new)
    clock_of(deps).advance(1_000)  # within the poll interval: not looked at yet
    assert await status(new) == 403
    clock_of(deps).advance(1_000)  # the bound: one poll interval after the change
    assert await status(new) == 200
    assert await status(old) == 403  # the removed token stops working

    path.write_text("tokens = [ {broken")  # a bad file keeps the last good table
    clock_of(deps).advance(2_000)
    with caplog.at_level(logging.ERROR, logger="walstream.api.auth"):
        assert await status(new) == 200
    assert "not reloaded" in caplog.text


async def test_a_token_never_reaches_the_logs(api_client, tmp_path, caplog):
    path = tmp_path / "tokens.json"
    path.write_text(
        orjson.dumps(
            {
                "tokens": [
                    {
                        "sha256": hash_token(TOKENS["a_writer"]),
                        "role": "writer",
                        "namespaces": ["a"],
                    }
                ]
            }
        ).decode()
    )
    deps = _deps(auth_file=str(path), auth_file_poll_s=1.0)
    caplog.set_level(logging.DEBUG)
    client = await api_client(create_api(deps))
    for who in ("a_writer", "a_admin", "b_writer", "unknown", None):
        for method, url, body in (WRITE, DLQ, SHOW, REDRIVE):
            await client.request(method, url, json=body, headers=bearer(who))
    await client.get("/v1/namespaces/a/log", headers={"Authorization": "Basic " + UNKNOWN_TOKEN})
    path.write_text("{not json " + TOKENS["b_admin"])  # a broken file quoting a token
    clock_of(deps).advance(1_000)
    await client.request(*WRITE[:2], json=WRITE[2], headers=bearer("a_writer"))
    assert caplog.records, "nothing was logged: the test would prove nothing"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    for token in (*TOKENS.values(), UNKNOWN_TOKEN):
        assert token not in logged
        assert hash_token(token) not in logged


def test_the_openapi_document_says_which_routes_need_a_token():
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if ROUTE_ACCESS.get((method.upper(), path)) is Access.OPEN:
                assert operation["security"] == [], path
            else:
                assert "security" not in operation, path
                assert {"401", "403"} <= set(operation["responses"]), path


async def test_only_verified_tokens_are_cached_and_a_reload_empties_the_cache(api_client, tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[tokens]]\nsha256 = "{hash_token(TOKENS["admin"])}"\nrole = "admin"\n')
    api = create_api(_deps(tokens=None, auth_file=str(path), auth_file_poll_s=1.0))
    client = await api_client(api)
    for n in range(50):  # guesses: refused, never kept
        headers = {"Authorization": f"Bearer guess-{n}"}
        assert (await client.post(WRITE[1], json=WRITE[2], headers=headers)).status == 403
    assert api.auth.verified_count() == 0
    assert (await client.post(WRITE[1], json=WRITE[2], headers=bearer("admin"))).status == 200
    assert api.auth.verified_count() == 1
    path.write_text("tokens = []\n")  # the token is revoked
    clock_of(api.deps).advance(1_000)
    assert (await client.post(WRITE[1], json=WRITE[2], headers=bearer("admin"))).status == 403
    assert api.auth.verified_count() == 0


# -- the CLI's token: `walstream token new` makes a token and its hash entry; `walstream write`
# sends WALSTREAM_TOKEN (or --token) as a bearer token (was tests/api/test_auth_cli.py)


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "walstream",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_new_prints_a_token_and_the_entry_that_admits_it():
    code, out, _ = await _cli("token", "new", "--role", "writer", "--namespace", "a", "--name", "t")
    assert code == 0
    token_line = re.search(r"not stored\): (\S+)", out)
    entry_line = re.search(r"WALSTREAM_TOKENS entry: (\S+)", out)
    assert token_line is not None
    assert entry_line is not None
    token, entry = token_line.group(1), entry_line.group(1)
    assert token not in entry
    principal = parse_tokens_setting(entry).lookup(token)
    assert principal is not None
    assert (principal.name, principal.role, principal.namespaces) == ("t", Role.WRITER, {"a"})
    code, _, err = await _cli("token", "new", "--role", "writer")  # namespaces required
    assert code == 2
    assert "--namespace" in err


async def test_write_sends_the_token(api_client):
    deps = _deps()
    client = await api_client(create_api(deps))
    base = str(client.make_url(""))
    code, out, _ = await _cli(
        "write", "a", '{"x": 1}', "--api", base, env={"WALSTREAM_TOKEN": TOKENS["a_writer"]}
    )
    assert code == 0, out
    assert "durable=TRUE status=200" in out
    assert len(producer_of(deps).sent) == 1
    code, out, _ = await _cli("--token", TOKENS["b_writer"], "write", "a", "1", "--api", base)
    assert code == 1
    assert "status=403" in out
    env = {k: v for k, v in os.environ.items() if k != "WALSTREAM_TOKEN"}
    code, out, _ = await _cli("write", "a", "1", "--api", base, env=env)
    assert code == 1
    assert "status=401" in out
    assert len(producer_of(deps).sent) == 1
