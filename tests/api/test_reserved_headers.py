"""Review of issue 15: a target header may not be one walstream sets on every delivery.

``Idempotency-Key`` is how a target deduplicates (the write's idempotency_token, else the record
id); ``X-Wal-*`` say which record and attempt it is. A target header of such a name would replace
them, so every way a target comes in refuses it with a 400 naming ``target.headers.<Name>``:
a single write, a batch record, a namespace definition and a redrive's target override. The
OpenAPI document says the same.
"""

from __future__ import annotations

import jsonschema
import pytest

from walstream.api.openapi import openapi_document
from walstream.errors import ConfigError
from walstream.namespaces.config import parse_namespace

URL = "/v1/namespaces/orders/log"
RESERVED = [
    "Idempotency-Key",
    "idempotency-key",
    "X-Wal-Id",
    "X-WAL-ID",
    "X-Wal-Namespace",
    "X-Wal-Original-Write-Time",
    "x-wal-attempt",
    "X-Wal-Deliver-At",
]


def _target(name: str) -> dict[str, object]:
    return {"type": "http", "url": "http://127.0.0.1:9/x", "headers": {"X-Ok": "1", name: "spoof"}}


@pytest.mark.parametrize("name", RESERVED)
async def test_a_write_with_a_reserved_target_header_is_refused(client, producer, name):
    response = await client.post(URL, json={"payload": 1, "target": _target(name)})
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == f"target.headers.{name}"
    assert answer["durable"] == "FALSE"
    assert producer.sent == []


async def test_a_batch_record_with_a_reserved_target_header_is_refused(client, producer):
    records = [{"payload": 1}, {"payload": 2, "target": _target("Idempotency-Key")}]
    response = await client.post(URL + ":batch", json={"records": records})
    results = (await response.json())["results"]
    assert [r["durable"] for r in results] == ["TRUE", "FALSE"]
    assert results[1]["status"] == 400
    assert results[1]["field"] == "target.headers.Idempotency-Key"
    assert len(producer.sent) == 1


async def test_a_redrive_target_with_a_reserved_header_is_refused(client):
    response = await client.post(
        "/v1/namespaces/orders/dlq:redrive", json={"target": _target("X-Wal-Id")}
    )
    assert response.status == 400
    assert (await response.json())["field"] == "target.headers.X-Wal-Id"


@pytest.mark.parametrize("name", ["Idempotency-Key", "x-wal-attempt"])
def test_a_namespace_target_with_a_reserved_header_is_refused(name):
    with pytest.raises(ConfigError) as refused:
        parse_namespace({"name": "orders", "target": _target(name)})
    assert refused.value.key == f"target.headers.{name}"


@pytest.mark.parametrize(("name", "valid"), [*((n, False) for n in RESERVED), ("X-Wal", True)])
def test_the_document_refuses_the_same_names(name, valid):
    document = openapi_document()
    schema = {"$ref": "#/components/schemas/Target", "components": document["components"]}
    assert jsonschema.Draft202012Validator(schema).is_valid(_target(name)) is valid
