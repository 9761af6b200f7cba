"""Shared fixtures: the real embedded broker (session-scoped) and unique names."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import hypothesis
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from walstream.broker import EmbeddedBroker, wait_for_kafka

# Property tests judge results, not speed: hypothesis' default 200 ms deadline per example fails
# them at random on a loaded 2-core CI machine (seen: a pure jitter check under load).
hypothesis.settings.register_profile("walstream", deadline=None)
hypothesis.settings.load_profile("walstream")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker: WALSTREAM_TEST_BROKER or embedded Tansu.

    Never skipped: a broker that cannot start fails the integration tests (CI gates on them).
    """
    external = os.environ.get("WALSTREAM_TEST_BROKER")
    if external:
        host, port = external.rsplit(":", 1)
        wait_for_kafka(host, int(port))
        yield external
        return
    embedded = EmbeddedBroker().start()
    try:
        yield embedded.bootstrap_servers
    finally:
        embedded.stop()


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker of the test's own, which the test may stop, restart or kill."""
    broker = EmbeddedBroker().start()
    yield broker
    # Tansu waits 5 s on SIGTERM while a client is still connected (the test's API is torn
    # down after this fixture): killed after 1 s, the test is over
    broker.stop(timeout=1.0)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, groups and app ids."""
    return uuid.uuid4().hex[:10]


class ApiTestServer(BaseTestServer):
    """Serves an Api's own low-level server (the same object production serves)."""

    def __init__(self, api, **kwargs):
        self._api = api
        super().__init__(**kwargs)

    async def _make_runner(self, **kwargs):
        return web.ServerRunner(self._api.server(), **kwargs)


@pytest.fixture
async def api_client(aiohttp_client):
    """``client = await api_client(api)``: runs the Api's lifespan and serves it over HTTP."""
    async with contextlib.AsyncExitStack() as stack:

        async def serve(api):
            await stack.enter_async_context(api)
            return await aiohttp_client(ApiTestServer(api))

        yield serve


@pytest.fixture(scope="session")
def postgres():
    """DSN of a real PostgreSQL server (Debian's, run as the postgres user), or WALSTREAM_TEST_PG.

    Never skipped: `make test` installs PostgreSQL when it is missing.
    """
    external = os.environ.get("WALSTREAM_TEST_PG")
    if external:
        yield external
        return
    import glob
    import shutil
    import subprocess

    from walstream.broker import free_port

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")
    bin_dir = bins[-1]
    import tempfile
    from pathlib import Path

    # pytest's temp root is private to root (0700): the postgres user could not reach it
    data = Path(tempfile.mkdtemp(prefix="walstream-pg-")) / "data"
    data.mkdir()
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    port = free_port()
    subprocess.run(
        [*prefix, f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            f"{bin_dir}/pg_ctl",
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "server.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def memcached_servers():
    """Three real memcached servers (Debian's, one per region of issue 17's tests) on loopback.

    Never skipped: `make test` installs memcached when it is missing. Shared by the session:
    tests use keys of their own (``unique``); a test that stops a server uses ``own_memcached``.
    """
    from walstream.testing.memcached import MemcachedProcess

    servers = [MemcachedProcess() for _ in range(3)]
    try:
        try:
            for server in servers:
                server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def own_memcached():
    """``start(**options)``: a memcached of the test's own, which it may stop and start again."""
    from walstream.testing.memcached import MemcachedProcess

    started: list[MemcachedProcess] = []

    def start(**options) -> MemcachedProcess:
        server = MemcachedProcess(**options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
