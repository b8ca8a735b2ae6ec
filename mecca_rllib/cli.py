"""The ``mecca`` command line. Each subcommand lives in the module that owns its job.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed ``argparse.Namespace``, returns an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mecca_rllib._version import __version__
from mecca_rllib.data.errors import NonFiniteError

# Modules that contribute subcommands; a missing module is skipped (not yet built).
SUBCOMMAND_MODULES = (
    "mecca_rllib.data.commands",
    "mecca_rllib.train",
    "mecca_rllib.session_commands",
    "mecca_rllib.web.commands",
    "mecca_rllib.tune_cli",
    "mecca_rllib.bench.commands",
)


class CLIError(Exception):
    """An error the CLI prints as one line and exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mecca",
        description="MECCA interactive 3D segmentation on Ray RLlib.",
    )
    parser.add_argument("--version", action="version", version=f"mecca-rllib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        if isinstance(err, NonFiniteError) and hasattr(args, "nonfinite"):
            err = err.with_option("--nonfinite clean")  # the option this command has
        print(f"mecca {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
