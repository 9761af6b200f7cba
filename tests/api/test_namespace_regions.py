"""A namespace's replication regions (issue 17 item 1) through the API: applied as `ns apply`
publishes it (the control topic's event, folded by the registry), read back by
GET /v1/namespaces/{ns}; an event whose regions are invalid makes the namespace unavailable,
naming the field."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from walstream.api.openapi import SCHEMAS
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event

EVC: dict[str, Any] = {
    "name": "evc",
    "replication": {
        "replicate": "invalidate",
        "regions": {
            "us-east": {"memcached": ["127.0.0.1:11211", "Cache.Example:11212"]},
            "eu-west": {"memcached": ["[::1]:11211"], "bootstrap_servers": "127.0.0.1:9093"},
        },
        "max_lag_s": 300,
    },
}


@pytest.fixture
def registry():  # the API fixtures' (tests/api/conftest.py) registry
    registry = NamespaceRegistry()
    registry.apply(*encode_event(parse_namespace(EVC), 1))
    return registry


async def test_a_namespace_with_regions_is_read_back(client):
    response = await client.get("/v1/namespaces/evc")
    assert response.status == 200
    body = await response.json()
    assert body["replication"] == {
        "replicate": "invalidate",
        "regions": {
            "eu-west": {"memcached": ["[::1]:11211"], "bootstrap_servers": "127.0.0.1:9093"},
            "us-east": {"memcached": ["127.0.0.1:11211", "cache.example:11212"]},
        },
        "max_lag_s": 300,
        "tombstone_ttl_s": 600,
    }
    jsonschema.validate(body, SCHEMAS["Namespace"], cls=jsonschema.Draft202012Validator)
    listed = await (await client.get("/v1/namespaces")).json()
    assert [ns.get("replication") for ns in listed["namespaces"]] == [body["replication"]]


@pytest.mark.parametrize(
    ("regions", "field"),
    [
        ({"us-east": {"memcached": ["127.0.0.1:11211"]}}, "replication.regions"),
        (
            {"us-east": {"memcached": ["127.0.0.1:99999"]}, "eu": {"memcached": ["h:1"]}},
            "replication.regions.us-east.memcached[0]",
        ),
        (
            {"us-east": {"memcached": ["h:1"]}, "eu.west": {"memcached": ["h:2"]}},
            "replication.regions.eu.west",
        ),
    ],
)
async def test_an_event_with_bad_regions_makes_the_namespace_unavailable_naming_the_field(
    client, registry, regions, field, caplog
):
    event = orjson.dumps({"v": 1, "config": {"name": "evc", "replication": {"regions": regions}}})
    registry.apply(b"evc", event)
    assert "evc is unavailable" in caplog.text
    response = await client.get("/v1/namespaces/evc")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "NamespaceUnavailableError"
    assert f"({field}=" in body["message"]


@pytest.mark.parametrize(
    "replication",
    [
        {**EVC["replication"], "regions": {"us-east": {"memcached": ["h:1"]}}},
        {**EVC["replication"], "regions": {"a.b": {"memcached": ["h:1"]}, "c": {"memcached": []}}},
        {**EVC["replication"], "replicate": "copy"},
        {**EVC["replication"], "lag": 1},
    ],
)
def test_the_documented_schema_of_regions_refuses_what_the_parser_refuses(replication):
    schema = SCHEMAS["Namespace"]["properties"]["replication"]
    full = {**replication, "max_lag_s": 300, "tombstone_ttl_s": 600}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(full, schema, cls=jsonschema.Draft202012Validator)
