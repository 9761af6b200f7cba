"""The OpenAPI document of the mutation routes says what walstream.core.mutations.request
checks: the fields of each body, and which bodies are valid; real answers match its schemas."""

from __future__ import annotations

import jsonschema
import pytest

from walstream.api.app import create_api
from walstream.api.openapi import SCHEMAS, openapi_document
from walstream.core.mutations import request
from walstream.core.mutations.wire import MutationLimits
from walstream.errors import BadRequestError
from walstream.settings import Settings
from walstream.testing import NOW_MS, api_deps, registry_of

DOCUMENT = openapi_document()
LIMITS = MutationLimits()


def _valid(name, instance):
    schema = {**SCHEMAS[name], "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def _taken(parse, body):
    try:
        parse(body)
    except BadRequestError:
        return False
    return True


def test_the_operation_schema_lists_exactly_the_fields_of_a_put_and_a_delete():
    put, delete = SCHEMAS["MutationOperation"]["oneOf"]
    assert set(put["properties"]) == request._PUT_FIELDS
    assert set(delete["properties"]) == request._DELETE_FIELDS
    assert set(SCHEMAS["MutateItemsRequest"]["properties"]) == {"txn_id", "operations"}
    assert set(SCHEMAS["MutationComplete"]["properties"]) == {"count"}


OPERATIONS: list = [
    {"op": "put", "table": "t", "id": "k", "value": {"a": [1, None]}},
    {"op": "put", "table": "t", "id": "k", "value": None},
    {"op": "put", "table": "_t9", "id": "k" * 1024, "value": 1, "value_encoding": "json"},
    {"op": "put", "table": "t", "id": "k", "value": "AAE=", "value_encoding": "base64"},
    {"op": "put", "table": "t", "id": "k", "value": 1, "original_write_time": 5},
    {"op": "put", "table": "t", "id": "k", "value": 1, "original_write_time": None},
    {"op": "delete", "table": "t", "id": "k"},
    {"op": "delete", "table": "t", "id": "k", "original_write_time": NOW_MS},
    # refused
    {"op": "put", "table": "t", "id": "k"},
    {"op": "put", "table": "t", "id": "k", "value": "AAE", "value_encoding": "base64"},
    {"op": "put", "table": "t", "id": "k", "value": 5, "value_encoding": "base64"},
    {"op": "put", "table": "t", "id": "k", "value": 1, "value_encoding": "hex"},
    {"op": "put", "table": "1t", "id": "k", "value": 1},
    {"op": "put", "table": "t" * 64, "id": "k", "value": 1},
    {"op": "put", "table": "t", "id": "", "value": 1},
    {"op": "put", "table": "t", "id": "k" * 1025, "value": 1},
    {"op": "put", "table": "t", "id": 5, "value": 1},
    {"op": "put", "table": "t", "id": "k", "value": 1, "original_write_time": 0},
    {"op": "put", "table": "t", "id": "k", "value": 1, "original_write_time": "5"},
    {"op": "delete", "table": "t", "id": "k", "value": 1},
    {"op": "delete", "table": "t", "id": "k", "value_encoding": "json"},
    {"op": "upsert", "table": "t", "id": "k"},
    {"table": "t", "id": "k"},
    {"op": "put", "table": "t", "id": "k", "value": 1, "x": 1},
    [],
]


@pytest.mark.parametrize("body", OPERATIONS)
def test_an_operation_is_valid_for_the_document_exactly_when_the_server_takes_it(body):
    taken = _taken(lambda b: request.parse_operation(b, LIMITS, now_ms=NOW_MS), body)
    assert _valid("MutationOperation", body) == taken


@pytest.mark.parametrize(
    "body",
    [
        {"txn_id": "a", "operations": [OPERATIONS[0]]},
        {"txn_id": "A" + "-" * 127, "operations": OPERATIONS[:8]},
        {"txn_id": "-a", "operations": [OPERATIONS[0]]},
        {"txn_id": "a:b", "operations": [OPERATIONS[0]]},
        {"txn_id": "a" * 129, "operations": [OPERATIONS[0]]},
        {"txn_id": "a", "operations": []},
        {"txn_id": "a", "operations": [OPERATIONS[8]]},
        {"txn_id": "a"},
        {"txn_id": "a", "operations": [OPERATIONS[0]], "more": 1},
    ],
)
def test_a_mutate_items_is_valid_for_the_document_exactly_when_the_server_takes_it(body):
    taken = _taken(lambda b: request.parse_mutate_items(b, LIMITS, now_ms=NOW_MS), body)
    assert _valid("MutateItemsRequest", body) == taken


@pytest.mark.parametrize(
    "body", [{"count": 1}, {"count": 1000}, {"count": 0}, {"count": "1"}, {}, {"count": 1, "x": 2}]
)
def test_a_marker_is_valid_for_the_document_exactly_when_the_server_takes_it(body):
    assert _valid("MutationComplete", body) == _taken(
        lambda b: request.parse_count(b, LIMITS), body
    )


@pytest.mark.parametrize(
    ("txn_id", "valid"),
    [("a", True), ("a.b_c-9", True), ("_a", False), ("a:b", False), ("", False)],
)
def test_the_txn_id_parameter_as_documented(txn_id, valid):
    [param] = [
        p
        for p in DOCUMENT["paths"]["/v1/namespaces/{namespace}/mutations/{txn_id}"]["get"][
            "parameters"
        ]
        if p["name"] == "txn_id"
    ]
    assert jsonschema.Draft202012Validator(param["schema"]).is_valid(txn_id) == valid
    assert _taken(request.parse_txn_id, txn_id) == valid


async def test_mutation_answers_match_the_document(api_client):
    deps = api_deps(
        Settings(auth=False),
        registry_of(
            {"name": "kv", "target": {"type": "kv", "table": "t", "key": "k"}, "mutations": {}}
        ),
    )
    client = await api_client(create_api(deps))
    paths = DOCUMENT["paths"]
    cases = [
        (
            "/v1/namespaces/kv/mutations/x/0",
            "/v1/namespaces/{namespace}/mutations/{txn_id}/{seq}",
            OPERATIONS[0],
            200,
        ),
        (
            "/v1/namespaces/kv/mutations/x/0",
            "/v1/namespaces/{namespace}/mutations/{txn_id}/{seq}",
            OPERATIONS[8],
            400,
        ),
        (
            "/v1/namespaces/kv/mutations/x:complete",
            "/v1/namespaces/{namespace}/mutations/{txn_id}:complete",
            {"count": 1},
            200,
        ),
        (
            "/v1/namespaces/kv/mutations",
            "/v1/namespaces/{namespace}/mutations",
            {"txn_id": "x", "operations": [OPERATIONS[6]]},
            200,
        ),
        (
            "/v1/namespaces/kv/mutations",
            "/v1/namespaces/{namespace}/mutations",
            {"txn_id": "x", "operations": [OPERATIONS[0]] * 1001},
            413,
        ),
        (
            "/v1/namespaces/kv/mutations",
            "/v1/namespaces/{namespace}/mutations",
            {"txn_id": "x", "operations": [{**OPERATIONS[6], "table": "u"}]},
            403,
        ),
    ]
    for url, path, body, status in cases:
        response = await client.post(url, json=body)
        assert response.status == status, (url, await response.text())
        documented = paths[path]["post"]["responses"]
        assert str(status) in documented
        schema = documented[str(status)]["content"]["application/json"]["schema"]
        assert _valid(schema["$ref"].rsplit("/", 1)[1], await response.json())
