"""The OpenAPI document matches the routes, the validator's fields, and real responses."""

from __future__ import annotations

import jsonschema
import pytest

from walstream.api.app import create_api
from walstream.api.openapi import SCHEMAS, openapi_document
from walstream.core import validate


def _routes(api):
    return {(route.pattern, route.method.lower()) for route in api.router.routes()}


def test_every_route_is_documented_and_nothing_else(deps):
    documented = {
        (path, method) for path, ops in openapi_document()["paths"].items() for method in ops
    }
    assert documented == _routes(create_api(deps))


def test_request_schema_lists_exactly_the_accepted_fields():
    assert set(SCHEMAS["WriteToLogRequest"]["properties"]) == validate._REQUEST_FIELDS
    assert set(SCHEMAS["Lifecycle"]["properties"]) == validate._LIFECYCLE_FIELDS


def _check(schema_name, body):
    jsonschema.validate(body, SCHEMAS[schema_name], cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    ("body", "status"),
    [({"payload": 1}, 200), ({"payload": 1, "lifecycle": {"delay_ms": "x"}}, 400)],
)
async def test_write_responses_match_the_schema(client, body, status):
    response = await client.post("/v1/namespaces/orders/log", json=body)
    assert response.status == status
    _check("WriteToLogResponse", await response.json())
    documented = openapi_document()["paths"]["/v1/namespaces/{namespace}/log"]["post"]
    assert str(status) in documented["responses"]


async def test_other_responses_match_the_schema(client):
    batch = await client.post(
        "/v1/namespaces/orders/log:batch", json={"records": [{"payload": 1}, {}]}
    )
    _check("WriteBatchResponse", await batch.json())
    _check("Ready", await (await client.get("/readyz")).json())
    _check("Namespace", await (await client.get("/v1/namespaces/orders")).json())
    served = await (await client.get("/v1/openapi.json")).json()
    assert served == openapi_document()
    jsonschema.Draft202012Validator.check_schema(SCHEMAS["WriteToLogRequest"])
