"""Faust agents and services of the worker: thin wiring over handlers that never raise."""
