"""The API router: exact paths, {param} segments, 404 and 405."""

from __future__ import annotations

import pytest

from walstream.api.router import Router
from walstream.errors import MethodNotAllowedError, RouteNotFoundError


async def _a(request, deps, params):
    return "a"


async def _b(request, deps, params):
    return "b"


async def _c(request, deps, params):
    return "c"


@pytest.fixture
def router():
    r = Router()
    r.add("POST", "/v1/namespaces/{namespace}/log", _a)
    r.add("POST", "/v1/namespaces/{namespace}/log:batch", _b)
    r.add("GET", "/v1/namespaces/{namespace}", _c)
    r.add("GET", "/v1/namespaces", _c)
    return r


def test_pattern_routes_bind_their_parameters(router):
    assert router.resolve("POST", "/v1/namespaces/orders/log") == (_a, {"namespace": "orders"})
    assert router.resolve("POST", "/v1/namespaces/x/log:batch") == (_b, {"namespace": "x"})
    assert router.resolve("GET", "/v1/namespaces/orders") == (_c, {"namespace": "orders"})


def test_exact_routes_win_without_parameters(router):
    assert router.resolve("GET", "/v1/namespaces") == (_c, {})


@pytest.mark.parametrize(
    "path",
    ["/v1/namespaces/orders/log/", "/v1/namespaces//log", "/v1/namespace/orders/log", "/", ""],
)
def test_other_paths_are_not_found(router, path):
    with pytest.raises(RouteNotFoundError):
        router.resolve("POST", path)


def test_a_known_path_with_another_method_names_the_allowed_ones(router):
    with pytest.raises(MethodNotAllowedError) as caught:
        router.resolve("GET", "/v1/namespaces/orders/log")
    assert caught.value.allowed == ["POST"]


def test_routes_are_listed_in_registration_order(router):
    assert [(r.method, r.pattern) for r in router.routes()] == [
        ("POST", "/v1/namespaces/{namespace}/log"),
        ("POST", "/v1/namespaces/{namespace}/log:batch"),
        ("GET", "/v1/namespaces/{namespace}"),
        ("GET", "/v1/namespaces"),
    ]


def test_remembered_matches_stay_right_and_bounded(router):
    from walstream.api import router as module

    for round_no in range(2):  # the second round is served from what the first remembered
        for i in range(module._MATCHED_MAX + 10):
            handler, params = router.resolve("POST", f"/v1/namespaces/ns-{i}/log")
            assert handler is _a
            assert params == {"namespace": f"ns-{i}"}, round_no
    assert len(router._matched) <= module._MATCHED_MAX
    with pytest.raises(RouteNotFoundError):
        router.resolve("POST", "/v1/namespaces/x/nothing")
    assert "/v1/namespaces/x/nothing" not in router._matched
    with pytest.raises(MethodNotAllowedError):  # a remembered path still checks the method
        router.resolve("DELETE", "/v1/namespaces/ns-1/log")
    with pytest.raises(TypeError):  # params are read-only: one handler cannot spoil the next
        router.resolve("POST", "/v1/namespaces/ns-1/log")[1]["namespace"] = "other"


def test_a_parameter_with_a_fixed_ending_binds_what_comes_before_it():
    r = Router()
    r.add("POST", "/v1/namespaces/{namespace}/mutations/{txn_id}:complete", _a)
    r.add("GET", "/v1/namespaces/{namespace}/mutations/{txn_id}", _b)
    r.add("POST", "/v1/namespaces/{namespace}/mutations/{txn_id}/{seq}", _c)
    assert r.resolve("POST", "/v1/namespaces/kv/mutations/t-1:complete") == (
        _a,
        {"namespace": "kv", "txn_id": "t-1"},
    )
    assert r.resolve("GET", "/v1/namespaces/kv/mutations/t-1") == (
        _b,
        {"namespace": "kv", "txn_id": "t-1"},
    )
    assert r.resolve("POST", "/v1/namespaces/kv/mutations/t-1/7") == (
        _c,
        {"namespace": "kv", "txn_id": "t-1", "seq": "7"},
    )
    # the ending alone binds nothing: the plain parameter's route takes it
    assert r.resolve("GET", "/v1/namespaces/kv/mutations/:complete") == (
        _b,
        {"namespace": "kv", "txn_id": ":complete"},
    )
    assert r.resolve("GET", "/v1/namespaces/kv/mutations/t:completed")[0] is _b
    with pytest.raises(MethodNotAllowedError):
        r.resolve("GET", "/v1/namespaces/kv/mutations/t-1:complete")
