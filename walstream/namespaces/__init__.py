"""Namespaces: validated configuration, the registry every process folds, and its broadcast."""
