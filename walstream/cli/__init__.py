"""Operator commands: ``walstream worker|api|run|broker|ns ...``. Thin: parse, call, print.

A package by command group, each changing for its own reason: ``main`` (the group, the process
commands, the API's write and tokens), ``namespaces`` (ns), ``dlq``, ``replay``, and ``common``
(settings, running a coroutine, the registry, times).
"""

from __future__ import annotations

from walstream.cli.main import cli

__all__ = ["cli"]
