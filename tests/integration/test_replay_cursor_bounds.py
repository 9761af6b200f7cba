"""A replay's ``resume_from`` must name a place of its log. A partition the log does not have
is a 400 naming ``resume_from`` (every namespace has WALSTREAM_DEFAULT_PARTITIONS); an offset
past its partition's end is known once the replay read the ends: the replay stops with an error
naming ``resume_from``, shown by ``GET .../replay``. Both used to read nothing and say
``done``."""

from __future__ import annotations

import pytest

from walstream.api.app import build_api

from .conftest import apply_namespace, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_cursor_beyond_the_log_is_refused_naming_resume_from(
    api_client, wal_settings, unique
):
    ns = f"rcursor-{unique}"
    await apply_namespace(wal_settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    client = await api_client(build_api(wal_settings.replace(auth=False)))
    path = f"/v1/namespaces/{ns}/replay"
    partitions = wal_settings.default_partitions

    async def post(cursor: str):
        async def answered():
            response = await client.post(path, json={"from": 0, "to": 1, "resume_from": cursor})
            return response.status != 404 and response  # 404 until the API knows ns

        return await eventually(answered, 30, f"the API to know {ns}", every=0.2)

    response = await post(f"{partitions}:5")
    body = await response.json()
    assert response.status == 400, body
    assert body["field"] == "resume_from", body
    assert f"names partition {partitions}," in body["reason"], body

    async def ended():
        body = await (await client.get(path)).json()
        return body["state"] != "running" and body

    # the log is empty: every partition ends at 0
    response = await post("1:5")
    assert response.status == 202, await response.text()
    body = await eventually(ended, 60, "the replay from 1:5 to end")
    assert body["state"] == "stopped", body
    assert body["error"] == (
        "resume_from: names an offset past its partition's end: 1:5 (it ends at 0)"
    ), body
    assert body["resume_from"] is None, body

    response = await post(",".join(f"{p}:0" for p in range(partitions)))  # the log's ends
    assert response.status == 202, await response.text()
    body = await eventually(ended, 60, "the replay from the log's ends to end")
    assert body["state"] == "done", body
    assert body["error"] is None, body
