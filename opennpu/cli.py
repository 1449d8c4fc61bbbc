"""``opennpu`` command line. Each subcommand lives in its own module exposing ``register(subparsers)``;
its handler returns an exit code (0 ok, 1 verification failed, 2 bad input / unavailable)."""
from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS = [
    "opennpu.cli_gemm",      # gemm, sim, export
    "opennpu.cli_report",    # report
    "opennpu.cli_run",       # run
    "opennpu.cli_synth",     # synth
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opennpu", description="An open NPU: RTL, golden model, compiler.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:       # bad input anywhere below: one line, exit 2
        print(f"opennpu {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
