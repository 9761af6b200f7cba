"""walstream: a generic write-ahead log service on Kafka, built with Faust."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
