"""Auth on the real broker (issue 14): a client with namespace A's token writes to A and a worker
delivers it; the same token writes nothing to B and reads neither B's DLQ nor B's config."""

from __future__ import annotations

import orjson
import pytest

from walstream.api.app import build_api
from walstream.client import WalClient
from walstream.core.auth import hash_token, new_token

from .conftest import apply_namespace, eventually, run_cli, wait_serving
from .helpers import topic_end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_namespace_token_writes_its_namespace_and_nothing_else(
    api_client, wal_env, wal_settings, workers, recorder, unique
):
    a, b = f"a-{unique}", f"b-{unique}"
    await apply_namespace(
        wal_settings, {"name": a, "target": {"type": "http", "url": recorder.url}}
    )
    secret_url = recorder.url.replace("http://", "http://svc:hunter2@")
    await apply_namespace(
        wal_settings,
        {
            "name": b,
            "target": {"type": "http", "url": secret_url, "headers": {"X-Api-Key": "k-s3cret"}},
        },
    )
    a_token, b_admin = new_token(), new_token()
    settings = wal_settings.replace(
        auth=True,
        tokens=f"{hash_token(a_token)}:writer:{a}:team-a {hash_token(b_admin)}:namespace-admin:{b}",
    )
    worker = workers()
    await wait_serving(worker, f"wal.{a}.log")
    client = await api_client(build_api(settings))
    base = str(client.make_url(""))

    async with WalClient(base, token=a_token) as wal:
        written = await wal.write(a, {"to": "a"}, key="k")
        refused = await wal.write(b, {"to": "b"}, key="k")
    async with WalClient(base) as anonymous:
        no_token = await anonymous.write(a, {"anonymous": True})
    assert written.ok, written
    assert (refused.durable, refused.status) == ("FALSE", 403)
    assert (no_token.durable, no_token.status) == ("FALSE", 401)

    def delivered():
        return [r for r in recorder.successes() if orjson.loads(r.body) == {"to": "a"}]

    await eventually(delivered, 60, "the worker to deliver the record written with a's token")
    assert all(orjson.loads(r.body) != {"to": "b"} for r in recorder.all())
    assert sum((await topic_end_offsets(settings.bootstrap_list, f"wal.{b}.log")).values()) == 0

    headers = {"Authorization": f"Bearer {a_token}"}
    assert (await client.get(f"/v1/namespaces/{a}/dlq", headers=headers)).status == 200
    for method, path in (
        ("GET", f"/v1/namespaces/{b}/dlq"),
        ("POST", f"/v1/namespaces/{b}/dlq:redrive"),
        ("GET", f"/v1/namespaces/{b}"),
    ):
        response = await client.request(method, path, headers=headers)
        assert response.status == 403, (method, path)
    admin = {"Authorization": f"Bearer {b_admin}"}
    assert (await client.get(f"/v1/namespaces/{b}/dlq", headers=admin)).status == 200
    assert (await client.get("/readyz")).status == 200

    # `walstream ns show` (a Kafka reader, no token) redacts as the API does
    shown = run_cli(wal_env, "ns", "show", b)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    assert "k-s3cret" not in shown.stdout
    assert orjson.loads(shown.stdout)["target"]["headers"] == {"X-Api-Key": "***"}
