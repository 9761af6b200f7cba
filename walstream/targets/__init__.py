"""Delivery targets: one module per kind, each behind the Target protocol (targets.base)."""
