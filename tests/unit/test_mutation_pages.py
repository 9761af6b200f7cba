"""The worker's mutation status page (walstream.mutation_pages) against a stand-in app: the holder
answers from its rows; another worker forwards the question once, marked, and passes the owner's
answer on as it came; an owner that does not answer, or an unreadable row, is said, not raised."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from walstream.broker import free_port
from walstream.core.placement import key_partition
from walstream.errors import PoisonRecordError
from walstream.mutation_pages import FORWARDED_HEADER, MUTATION_PAGE, install_mutation_page

CHANGELOG = "app-mutations-changelog"
TXN = "tx-7"
HELD = key_partition(TXN.encode(), 4)


class Web:
    """Faust's web driver as the page uses it: each answer as (status, body, headers)."""

    def json(self, value, *, status=200, headers=None):
        return status, value, headers

    def bytes(self, value, *, status=200, content_type=None, headers=None):
        assert content_type == "application/json"
        return status, orjson.loads(value), headers


class App:
    """A stand-in Faust app: what the page reads of one, and its page handler."""

    def __init__(self, session, *, held: bool, owner: str | None, ready: bool = True) -> None:
        self.handlers: dict[str, Any] = {}
        self.http_client = session
        others = {owner: {CHANGELOG: [HELD]}} if owner is not None else {}
        self.assignor = SimpleNamespace(
            is_active=lambda tp: held and tp == (CHANGELOG, HELD),
            tables_metadata=lambda: {"http://127.0.0.1:1": {CHANGELOG: []}, **others},
        )
        completed = asyncio.Event()
        if ready:
            completed.set()
        self.tables = SimpleNamespace(recovery=SimpleNamespace(completed=completed))
        self.rebalancing = False
        self.in_recovery = False
        self.conf = SimpleNamespace(canonical_url=URL("http://127.0.0.1:1"))

    def page(self, path):
        def register(handler):
            self.handlers[path] = handler
            return handler

        return register

    async def ask(self, namespace="pds", txn=TXN, **headers):
        request = SimpleNamespace(
            headers=headers, rel_url=URL(f"/walstream/mutations/{namespace}/{txn}")
        )
        return await self.handlers[MUTATION_PAGE](Web(), request, namespace, txn)


TABLE = SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG))


def installed(session, rows, **kw) -> App:
    app = App(session, **kw)

    def status(namespace, txn_id):
        found = rows.get((namespace, txn_id))
        if isinstance(found, Exception):
            raise found
        return found

    install_mutation_page(app, TABLE, status, 4)  # type: ignore[arg-type]
    return app


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_holder_answers_from_its_rows(session):
    app = installed(session, {("pds", TXN): {"status": "open"}}, held=True, owner=None)
    assert await app.ask() == (200, {"status": "open"}, None)
    assert await app.ask(**{FORWARDED_HEADER: "1"}) == (200, {"status": "open"}, None)
    other = next(f"tx-{n}" for n in range(100) if n != 7 and key_partition(b"tx-%d" % n, 4) == HELD)
    status, body, _ = await app.ask(txn=other)
    assert (status, body["error"]) == (404, f"unknown transaction {other} in namespace pds")
    assert (await app.ask(txn="bad:id"))[0] == 400
    assert (await app.ask(namespace="Bad"))[0] == 400


async def test_the_holder_still_recovering_says_so(session):
    app = installed(session, {}, held=True, owner=None, ready=False)
    status, body, headers = await app.ask()
    assert (status, headers) == (503, {"Retry-After": "1"})
    assert "recovered" in body["error"]


async def test_an_unreadable_row_is_a_500_that_says_so(session):
    rows = {("pds", TXN): PoisonRecordError("mutation state: malformed")}
    app = installed(session, rows, held=True, owner=None)
    status, body, _ = await app.ask()
    assert status == 500
    assert "malformed" in body["error"]


async def owner_server(aiohttp_server, status: int, body: dict, seen: list):
    async def answer(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get(FORWARDED_HEADER)))
        headers = {"Retry-After": "3"} if status == 503 else None
        return web.json_response(body, status=status, headers=headers)

    owner = web.Application()
    owner.router.add_get(MUTATION_PAGE, answer)
    return await aiohttp_server(owner)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (200, {"status": "committed", "operations": 2}, None),
        (404, {"error": "unknown transaction tx-7 in namespace pds"}, None),
        (503, {"error": "partition 1 is being recovered here"}, {"Retry-After": "3"}),
    ],
)
async def test_another_worker_forwards_once_and_passes_the_answer_on(
    session, aiohttp_server, status, body, headers
):
    seen: list = []
    server = await owner_server(aiohttp_server, status, body, seen)
    app = installed(session, {}, held=False, owner=str(server.make_url("")))
    assert await app.ask() == (status, body, headers)
    assert seen == [(f"/walstream/mutations/pds/{TXN}", "1")]  # marked: not forwarded again


async def test_a_forwarded_question_for_a_partition_not_held_is_refused(session):
    app = installed(session, {("pds", TXN): {"status": "open"}}, held=False, owner=None)
    status, body, _ = await app.ask(**{FORWARDED_HEADER: "1"})
    assert status == 503
    assert "not held here" in body["error"]


async def test_an_owner_that_does_not_answer_is_a_503_naming_it(session):
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = installed(session, {}, held=False, owner=gone)
    status, body, headers = await app.ask()
    assert (status, headers) == (503, {"Retry-After": "1"})
    assert gone in body["error"]
    assert "did not answer" in body["error"]
