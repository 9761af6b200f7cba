"""The API's router: method + path to a handler and its path parameters.

walstream serves HTTP with aiohttp's low-level server rather than ``web.Application``. Per
WriteToLog the Application's routing, match-info and middleware chain cost about as much CPU as
walstream's own validation and encoding (measured end to end with callgrind, bench/ingest.py).
The API has a handful of routes, so a dictionary for exact paths and a segment-by-segment match
for patterns (``{name}`` stands for one whole segment, ``{name}:verb`` for a segment ending in
``:verb``, the name being the rest) do the same job for less. Patterns of one length are tried
in registration order: register ``{name}:verb`` before a ``{name}`` in the same place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aiohttp import web

from walstream.api.body import BodyLimit
from walstream.errors import MethodNotAllowedError, RouteNotFoundError

__all__ = ["Handler", "Route", "Router"]

#: A handler gets the request, the API's dependencies and the path parameters.
Handler = Callable[[web.BaseRequest, Any, Mapping[str, str]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One documented operation, and the limit of its request bodies."""

    method: str
    pattern: str
    handler: Handler
    body: BodyLimit = BodyLimit.SMALL


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_MATCHED_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Suffixed:
    """A pattern segment ``{name}:verb``: a parameter followed by a fixed ``:verb``."""

    suffix: str


#: A pattern segment: a fixed text, a whole-segment parameter (None), or a suffixed one.
_Segment = str | None | _Suffixed


def _segment(part: str) -> tuple[_Segment, str | None]:
    """A pattern segment and the name of its parameter (None: a fixed segment)."""
    if part.startswith("{") and part.endswith("}"):
        return None, part[1:-1]
    if part.startswith("{") and "}:" in part:
        name, _, verb = part[1:].partition("}")
        return _Suffixed(verb), name
    return part, None


class Router:
    """Resolves (method, path) to (handler, params)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._exact: dict[str, dict[str, Handler]] = {}
        #: paths matched to a parameterised route so far (only matches: misses are not kept)
        self._matched: dict[str, tuple[dict[str, Handler], Mapping[str, str]]] = {}
        #: segment count -> [(segments, names, {method: handler})]; None in segments marks a
        #: parameter, a _Suffixed one a parameter with a fixed ending
        self._patterns: dict[
            int, list[tuple[tuple[_Segment, ...], tuple[str, ...], dict[str, Handler]]]
        ] = {}

    def add(
        self, method: str, pattern: str, handler: Handler, *, body: BodyLimit = BodyLimit.SMALL
    ) -> None:
        """Register ``handler`` for ``method`` on ``pattern`` (``/v1/namespaces/{namespace}``),
        its request bodies bounded by ``body`` (walstream.api.body)."""
        self._routes.append(Route(method, pattern, handler, body))
        parsed = [_segment(p) for p in pattern.split("/")]
        names = tuple(name for _, name in parsed if name is not None)
        if not names:
            self._exact.setdefault(pattern, {})[method] = handler
            return
        segments = tuple(segment for segment, _ in parsed)
        candidates = self._patterns.setdefault(len(parsed), [])
        for existing, _, methods in candidates:
            if existing == segments:
                methods[method] = handler
                return
        candidates.append((segments, names, {method: handler}))

    def routes(self) -> list[Route]:
        """Every registered route, in registration order."""
        return list(self._routes)

    def resolve(self, method: str, path: str) -> tuple[Handler, Mapping[str, str]]:
        """The handler and path parameters for a request.

        Raises:
            RouteNotFoundError: no route has this path.
            MethodNotAllowedError: routes have this path, but not for ``method``.
        """
        methods = self._exact.get(path)
        params = _NO_PARAMS
        if methods is None:
            methods, params = self._matched.get(path) or self._match(path)
        handler = methods.get(method)
        if handler is None:
            raise MethodNotAllowedError(method, sorted(methods))
        return handler, params

    def _match(self, path: str) -> tuple[dict[str, Handler], Mapping[str, str]]:
        """Match ``path`` against the parameterised routes (remembered: a hot path's lookups
        repeat, and matching segment by segment costs ~1 us a request)."""
        methods = None
        params: Mapping[str, str] = _NO_PARAMS
        parts = path.split("/")
        for segments, names, candidate in self._patterns.get(len(parts), ()):
            values = []
            for want, got in zip(segments, parts, strict=True):
                if want is None:
                    if not got:
                        break
                    values.append(got)
                elif isinstance(want, _Suffixed):
                    if len(got) <= len(want.suffix) or not got.endswith(want.suffix):
                        break
                    values.append(got[: -len(want.suffix)])
                elif want != got:
                    break
            else:
                methods = candidate
                params = MappingProxyType(dict(zip(names, values, strict=True)))
                break
        if methods is None:
            raise RouteNotFoundError(f"no route for {path}")
        if len(self._matched) >= _MATCHED_MAX:  # bounded whatever paths clients send
            self._matched.clear()
        self._matched[path] = (methods, params)
        return methods, params
