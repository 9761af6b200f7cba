"""Every DLQ route on a replicated namespace's region DLQ (``?region=r``), as the handlers
resolve it: the region's view and cluster handed to the DLQ (walstream.dlq.regions), a malformed
region a 400 naming the field, a region the namespace does not replicate to (or a namespace that
replicates nothing) a 404 naming the region. The DLQ itself is a fake recording what it is asked
(its Kafka side: tests/integration/test_replication_dlq_http.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from walstream.api.app import create_api
from walstream.dlq import DlqPage, RedriveProgress
from walstream.settings import Settings
from walstream.testing import api_deps
from walstream.testing.records import namespace_definition, registry_of

REGIONS = {
    "a": {"memcached": ["127.0.0.1:1"]},
    "b": {"memcached": ["127.0.0.1:2"], "bootstrap_servers": "10.0.0.9:9092"},
}


class _Redrives:
    def __init__(self, progress: RedriveProgress) -> None:
        self.progress = progress

    def status(self, name: str) -> RedriveProgress:
        return self.progress

    async def cancel(self, name: str) -> RedriveProgress:
        return self.progress


class RecordingDlq:
    """Answers every DLQ call, recording (call, DLQ topic, log topic or None, region, servers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def page(self, topic, selection, *, limit, after, servers=None):
        self.calls.append(("page", topic, None, None, servers))
        return DlqPage(entries=[], open=0, matching=0, next=None)

    async def entry(self, topic, record_id, *, servers=None):
        self.calls.append(("entry", topic, None, None, servers))
        return None

    async def discard(self, ns, selection, *, region=None, servers=None):
        self.calls.append(("discard", ns.topics.dlq, ns.topics.log, region, servers))
        return 0

    async def start_redrive(self, ns, selection, *, rate, target, region=None, servers=None):
        self.calls.append(("redrive", ns.topics.dlq, ns.topics.log, region, servers))
        return RedriveProgress(namespace=ns.name, total=0, region=region)

    def running_redrives(self, region, servers=None):
        self.calls.append(("redrives", None, None, region, servers))
        return _Redrives(RedriveProgress(namespace="cache", total=0, region=region))


@pytest.fixture
def dlq() -> RecordingDlq:
    return RecordingDlq()


@pytest.fixture
async def client(api_client, dlq):
    registry = registry_of(
        namespace_definition("plain"),
        namespace_definition("cache", replication={"regions": REGIONS}),
    )
    deps = api_deps(Settings(auth=False, bootstrap_servers="127.0.0.1:9"), registry, dlq=dlq)
    return await api_client(create_api(deps))


#: (method, path after /v1/namespaces/<ns>, JSON body) of every DLQ route
ROUTES = [
    ("GET", "/dlq", None),
    ("GET", "/dlq/id-1", None),
    ("POST", "/dlq:redrive", {}),
    ("GET", "/dlq:redrive", None),
    ("DELETE", "/dlq:redrive", None),
    ("POST", "/dlq:discard", {"ids": ["id-1"]}),
]
IDS = [f"{method} {path}" for method, path, _ in ROUTES]


async def _call(client, route, ns: str, region: str) -> Any:
    method, path, body = route
    url = f"/v1/namespaces/{ns}{path}?region={quote(region, safe='')}"
    return await client.request(method, url, **({"json": body} if body is not None else {}))


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
async def test_a_region_the_namespace_does_not_replicate_to_is_a_404_naming_it(client, dlq, route):
    response = await _call(client, route, "cache", "zz")
    assert response.status == 404, await response.text()
    assert "no region 'zz'" in (await response.json())["message"]
    response = await _call(client, route, "plain", "a")  # replicates nothing
    assert response.status == 404, await response.text()
    message = (await response.json())["message"]
    assert "replicates nothing" in message
    assert "'a'" in message
    assert dlq.calls == []  # nothing read, nothing written


@pytest.mark.parametrize("region", ["", "B", "a.b", "a b", "a\n", "-a", "a" * 64])
@pytest.mark.parametrize("route", ROUTES, ids=IDS)
async def test_a_malformed_region_is_a_400_naming_the_field(client, dlq, route, region):
    response = await _call(client, route, "cache", region)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["field"] == "region"
    assert dlq.calls == []


async def test_each_route_works_on_the_regions_dlq_on_the_regions_cluster(client, dlq):
    for route in ROUTES:
        response = await _call(client, route, "cache", "b")
        assert response.status in (200, 202, 404), (route, await response.text())
    region_dlq, region_log, cluster = (
        "wal.cache.region.b.dlq",
        "wal.cache.region.b",
        "10.0.0.9:9092",
    )
    assert dlq.calls == [
        ("page", region_dlq, None, None, cluster),
        ("entry", region_dlq, None, None, cluster),
        ("redrive", region_dlq, region_log, "b", cluster),
        ("redrives", None, None, "b", cluster),
        ("redrives", None, None, "b", cluster),
        ("discard", region_dlq, region_log, "b", cluster),
    ]
    # without region: the namespace's own DLQ on this API's cluster
    dlq.calls.clear()
    started = await client.post("/v1/namespaces/cache/dlq:redrive", json={})
    assert started.status == 202
    assert "region" not in await started.json()
    assert dlq.calls == [("redrive", "wal.cache.dlq", "wal.cache.log", None, None)]


async def test_a_region_redrive_names_its_region_and_takes_no_target(client, dlq):
    started = await client.post("/v1/namespaces/cache/dlq:redrive?region=a", json={})
    assert started.status == 202
    assert (await started.json())["region"] == "a"
    target = {"type": "kafka", "topic": "elsewhere"}
    refused = await client.post(
        "/v1/namespaces/cache/dlq:redrive?region=a", json={"target": target}
    )
    assert refused.status == 400
    assert (await refused.json())["field"] == "target"
    status = await client.get("/v1/namespaces/cache/dlq:redrive?region=a")
    assert (await status.json())["region"] == "a"


@pytest.mark.parametrize("body", [{}, {"ids": []}, {"ids": ","}, {"error_class": None}])
async def test_a_discard_must_select_something(client, dlq, body):
    response = await client.post("/v1/namespaces/cache/dlq:discard?region=a", json=body)
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == "body"
    assert dlq.calls == []
