"""Namespace definition files (``topology/namespaces/*.toml``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from walstream.errors import ConfigError
from walstream.namespaces.config import NamespaceConfig, parse_namespace

__all__ = ["load_namespace_files"]


def load_namespace_files(paths: list[Path]) -> list[NamespaceConfig]:
    """Parse every ``.toml`` file given (directories are searched, sorted by name).

    Raises:
        ConfigError: naming the file and the key that is wrong.
    """
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.toml")) if path.is_dir() else [path])
    configs: list[NamespaceConfig] = []
    for file in files:
        try:
            obj = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(file), None, f"unreadable: {exc}") from exc
        try:
            configs.append(parse_namespace(obj))
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc.key}", exc.value, exc.reason) from exc
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("name", duplicates[0], "defined in more than one file")
    return configs
