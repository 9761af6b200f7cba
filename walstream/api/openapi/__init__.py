"""The OpenAPI 3.1 document of the HTTP API (a test checks it against the routes and responses).

A package by concern, so that each part changes for one reason: ``fields`` (value schemas the
parsers define), ``targets`` (a schema per target type), ``responses`` (the error schema and the
responses every route shares), ``writes``, ``namespaces``, ``dlq``, ``replay`` and ``service``
(each concern's schemas and paths), ``document`` (put together, with its bearer auth).
"""

from __future__ import annotations

from walstream.api.openapi.document import SCHEMAS, openapi_document
from walstream.api.openapi.targets import TARGET_SCHEMAS

__all__ = ["SCHEMAS", "TARGET_SCHEMAS", "openapi_document"]
