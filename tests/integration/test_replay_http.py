"""Replay over HTTP on the real broker (issue 14: a token for namespace A cannot replay B):
``POST /v1/namespaces/{ns}/replay`` with the namespace-admin's token re-delivers the window's
records to their target (the http recorder), in order, without the skipped one; another
namespace's admin, a writer and no token are refused and deliver nothing."""

from __future__ import annotations

import time

import pytest

from walstream.api.app import build_api
from walstream.client import WalClient
from walstream.core.auth import hash_token, new_token

from .conftest import apply_namespace, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_replay_over_http_redelivers_the_window_for_its_namespace_admin_only(
    api_client, wal_settings, recorder, unique
):
    a, b = f"rhttp-a-{unique}", f"rhttp-b-{unique}"
    for ns in (a, b):
        await apply_namespace(
            wal_settings, {"name": ns, "target": {"type": "http", "url": recorder.url}}
        )
    a_admin, a_writer, b_admin = new_token(), new_token(), new_token()
    settings = wal_settings.replace(
        auth=True,
        tokens=" ".join(
            [
                f"{hash_token(a_admin)}:namespace-admin:{a}:a-admin",
                f"{hash_token(a_writer)}:writer:{a}:a-writer",
                f"{hash_token(b_admin)}:namespace-admin:{b}:b-admin",
            ]
        ),
    )
    client = await api_client(build_api(settings))
    base = str(client.make_url(""))

    async with (
        WalClient(base, token=a_admin) as admin,
        WalClient(base, token=a_writer) as writer,
        WalClient(base, token=b_admin) as other,
        WalClient(base) as anonymous,
    ):
        # No worker runs: whatever reaches the recorder is the replay's doing.
        before = now_ms()

        async def first():
            result = await writer.write(a, {"n": 0}, key="k")
            assert result.ok or "is not defined" in result.message, result.message
            return result.ok and result

        written = [await eventually(first, 30, f"the API to know {a}", every=0.2)]
        written += [await writer.write(a, {"n": n}, key="k") for n in range(1, 4)]
        assert all(w.ok for w in written), [w.message for w in written]
        after = now_ms() + 1
        skipped = written[1].id

        # refused: another namespace's admin, a writer of a, no token; nothing starts
        for wal, status in ((other, 403), (writer, 403), (anonymous, 401)):
            code, body = await wal.replay(a, before, after, skip_ids=[skipped])
            assert code == status, body
            code, _ = await wal.replay_status(a)
            assert code == status
        code, body = await admin.replay_status(a)
        assert code == 404, body  # no replay of a ran

        code, body = await admin.replay(a, before, after, skip_ids=[skipped])
        assert code == 202, body
        assert body["state"] == "running"

        async def finished():
            code, progress = await admin.replay_status(a)
            assert code == 200, progress
            return progress["state"] != "running" and progress

        progress = await eventually(finished, 60, "the replay over HTTP to finish", every=0.2)
    assert progress["state"] == "done", progress
    assert progress["error"] is None
    assert progress["resume_from"] is None
    assert progress["failed"] == []
    assert (progress["delivered"], progress["skipped"]) == (3, 1), progress
    delivered = [r.headers["X-Wal-Id"] for r in recorder.all()]
    assert delivered == [w.id for w in written if w.id != skipped]  # in order, once each
