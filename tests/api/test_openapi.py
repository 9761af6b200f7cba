"""The OpenAPI document matches the routes, the validator's fields, and real responses."""

from __future__ import annotations

from datetime import datetime

import jsonschema
import pytest

from walstream.api.app import create_api
from walstream.api.openapi import SCHEMAS, TARGET_SCHEMAS, openapi_document
from walstream.core import targets, validate
from walstream.core.replay_request import MAX_TIME_MS
from walstream.core.targets import TARGET_TYPES, parse_target
from walstream.errors import BadRequestError
from walstream.namespaces.config import parse_namespace
from walstream.topology import reserved_topics


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


# --- issue 15 item 9: the document says what the server checks ---------------------------------

DOCUMENT = openapi_document()
_VALIDATOR = jsonschema.Draft202012Validator
#: RFC 3339 date-time, checked here (jsonschema checks it only with an optional package).
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value):
    if not isinstance(value, str):
        return True
    moment = datetime.fromisoformat(value)
    return "T" in value.upper() and moment.tzinfo is not None


def _resolved(schema):
    """``schema`` with its top-level $ref followed (components only)."""
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _valid(name, instance):
    """Whether ``instance`` is valid for the component ``name`` (its $refs into the document)."""
    schema = {**SCHEMAS[name], "components": DOCUMENT["components"]}
    return _VALIDATOR(schema, format_checker=_FORMATS).is_valid(instance)


def test_every_operation_documents_its_responses_with_a_json_schema():
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert any(status.startswith("2") for status in responses), (method, path)
            for status, response in responses.items():
                schema = response["content"]["application/json"]["schema"]
                assert _resolved(schema), (method, path, status)
                if status.startswith(("4", "5")) and path != "/readyz":
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_every_schema_is_valid_json_schema_and_every_ref_resolves():
    for schema in SCHEMAS.values():
        _VALIDATOR.check_schema(schema)

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(DOCUMENT):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in SCHEMAS, ref


def test_the_503s_say_retry_after_and_the_401s_www_authenticate():
    log = DOCUMENT["paths"]["/v1/namespaces/{namespace}/log"]["post"]["responses"]
    assert log["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert log["401"]["headers"]["WWW-Authenticate"]["required"] is True


def test_each_target_type_documents_exactly_the_options_the_server_checks():
    assert set(TARGET_SCHEMAS) == TARGET_TYPES
    target = SCHEMAS["Target"]
    assert target["discriminator"]["propertyName"] == "type"
    assert len(target["oneOf"]) == len(TARGET_TYPES)
    for kind, options in targets._SCHEMAS.items():
        schema = _resolved({"$ref": target["discriminator"]["mapping"][kind]})
        required = {name for name, (needed, _) in options.items() if needed}
        assert set(schema["required"]) == {"type", *required}, kind
        assert set(schema["properties"]) == {"type", *options}, kind
        assert schema["additionalProperties"] is False


MINIMAL_TARGETS = {
    "kafka": {"type": "kafka", "topic": "out"},
    "http": {"type": "http", "url": "http://127.0.0.1:9/hook"},
    "kv": {"type": "kv", "table": "orders", "key": "k"},
    "wal": {"type": "wal", "namespace": "other"},
}


@pytest.mark.parametrize("kind", sorted(MINIMAL_TARGETS))
def test_a_target_is_valid_for_the_document_exactly_when_the_server_takes_it(kind):
    minimal = MINIMAL_TARGETS[kind]
    assert _valid("Target", minimal)
    assert parse_target(minimal).type == kind
    required, options = TARGET_SCHEMAS[kind]
    for name in required:  # without a required option: refused by both, naming it
        missing = {k: v for k, v in minimal.items() if k != name}
        assert not _valid("Target", missing)
        with pytest.raises(BadRequestError) as refused:
            parse_target(missing)
        assert refused.value.field == f"target.{name}"
    for name, value in [("unknown_option", "x"), *((n, "") for n in options)]:
        bad = {**minimal, name: value}  # an unknown option, or an empty string
        assert not _valid("Target", bad), (kind, name)
        with pytest.raises(BadRequestError):
            parse_target(bad)


@pytest.mark.parametrize(
    ("headers", "taken"),
    [
        ({"X-Api-Key": "k"}, True),
        ({"content-LENGTH": "1"}, False),  # framing: whatever the case
        ({"Connection": "close"}, False),
        ({"Bad Name": "v"}, False),  # not an HTTP token
        ({"X-A": "a\r\nInjected: 1"}, False),
        ({"X-A": "nul\u0000"}, False),
        ({"X-A": "v\x01w"}, False),  # any control character but tab: an upstream's 400
        ({"X-A": "v\x0bw"}, False),
        ({"X-A": "del\x7f"}, False),
        ({"X-A": "a\tb c"}, True),
        ({"X-A": "caf\u00e9"}, True),
    ],
)
def test_http_target_headers_as_documented_and_checked(headers, taken):
    target = {"type": "http", "url": "http://127.0.0.1:9/", "headers": headers}
    assert _valid("Target", target) is taken
    if taken:
        parse_target(target)
    else:
        with pytest.raises(BadRequestError):
            parse_target(target)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"payload": {"any": ["json", 1, None]}}, True),
        ({"payload": "text", "payload_encoding": "json"}, True),
        ({"payload": "aGVsbG8=", "payload_encoding": "base64"}, True),
        ({"payload": "aGVsbG8", "payload_encoding": "base64"}, False),  # padding
        ({"payload": "h\u00e9llo=", "payload_encoding": "base64"}, False),  # not base64 text
        ({"payload": 5, "payload_encoding": "base64"}, False),  # base64 is text
        ({"payload": 1, "payload_encoding": "hex"}, False),
        ({"payload": 1, "target": None, "lifecycle": None, "key": None}, True),  # null: absent
        ({"payload": 1, "lifecycle": {"delay_ms": 1, "deliver_at": 2}}, False),
        ({"payload": 1, "idempotency_token": "a\nb"}, False),
        ({"payload": 1, "idempotency_token": "a\x01b"}, False),
        ({"payload": 1, "idempotency_token": "a\tb"}, True),
    ],
)
def test_the_payload_is_typed_by_its_encoding(body, valid):
    assert _valid("WriteToLogRequest", body) is valid


_HEADER_NS = parse_namespace({"name": "n", "target": {"type": "kafka", "topic": "t"}})


def _taken(parse) -> bool:
    try:
        parse()
    except BadRequestError:
        return False
    return True


@pytest.mark.parametrize("char", [chr(c) for c in range(0x80)] + ["\u00e9", "\u2028", "\U0001f600"])
def test_header_values_are_documented_as_checked(char):
    """A token and an http target's header value, for each ASCII character (and a few beyond):
    the document takes one exactly when the server does, and that is when no header value
    would refuse it."""
    value = f"a{char}b"
    sendable = not targets.has_unsendable_chars(value)
    assert sendable is (char == "\t" or " " <= char != "\x7f")
    body = {"payload": 1, "idempotency_token": value}
    assert _valid("WriteToLogRequest", body) is sendable
    parse = validate.parse_write_request
    reserved = reserved_topics("walstream", "walstream.namespaces")
    assert (
        _taken(lambda: parse(body, _HEADER_NS, now_ms=1, rand=0.0, reserved=reserved)) is sendable
    )
    target = {"type": "http", "url": "http://127.0.0.1:9/", "headers": {"X-A": value}}
    assert _valid("Target", target) is sendable
    assert _taken(lambda: parse_target(target)) is sendable


def test_the_dlq_query_parameters_have_formats():
    listing = DOCUMENT["paths"]["/v1/namespaces/{namespace}/dlq"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {
        "namespace",
        "since",
        "until",
        "error_class",
        "ids",
        "id",
        "limit",
        "after",
        "region",
    }
    for name in ("since", "until"):
        schema = params[name]["schema"]
        for text in ("1700000000000", "-2h", "2026-11-23T10:00:00Z"):
            assert _VALIDATOR(schema, format_checker=_FORMATS).is_valid(text)
        for text in ("yesterday", "-2", "\u00b2"):
            assert not _VALIDATOR(schema, format_checker=_FORMATS).is_valid(text)
    assert (params["ids"]["style"], params["ids"]["explode"]) == ("form", False)  # ids=a,b
    assert params["ids"]["schema"]["type"] == "array"
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10_000,
        "default": 100,
    }
    assert _VALIDATOR(params["after"]["schema"]).is_valid("1700000000000.0.12")


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"from": 0, "to": "-1h"}, True),
        ({"from": "2026-11-23T10:00:00Z", "to": MAX_TIME_MS}, True),
        ({"from": 0, "to": MAX_TIME_MS + 1}, False),
        ({"from": -1, "to": 5}, False),
        ({"to": 5}, False),
        ({"from": 0, "to": 5, "resume_from": "0:12,1:3"}, True),
        ({"from": 0, "to": 5, "resume_from": "0-12"}, False),
    ],
)
def test_replay_windows_as_documented(body, valid):
    assert _valid("ReplayRequest", body) is valid


async def test_error_bodies_match_the_error_schema(client):
    responses = [
        await client.post("/v1/namespaces/orders/log", json={"payload": 1, "x": 2}),  # 400
        await client.get("/v1/namespaces/nope"),  # 404
        await client.post("/v1/namespaces/orders/log", data=b"{not json"),  # 400
        await client.get("/v1/namespaces/orders/dlq?limit=0"),  # 400
    ]
    for response in responses:
        assert response.status in (400, 404)
        body = await response.json()
        assert _valid("Error", body), body
    assert _valid("Health", await (await client.get("/healthz")).json())
    assert _valid("NamespaceList", await (await client.get("/v1/namespaces")).json())
