"""``python -m walstream`` / the ``walstream`` script."""

from __future__ import annotations

from walstream.cli import cli


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
