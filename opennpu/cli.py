"""``opennpu`` command line. Each subcommand lives in its own module exposing ``register(subparsers)``;
its handler returns an exit code (0 ok, 1 verification failed, 2 bad input / unavailable, 130
interrupted). Errors are one line on stderr, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import sys

from opennpu.sim.driver import BackendFailed

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS = [
    "opennpu.cli_gemm",      # gemm, sim, export
    "opennpu.cli_report",    # report
    "opennpu.cli_run",       # run
    "opennpu.cli_synth",     # synth
    "opennpu.cli_sweep",     # sweep
]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line too (``--help`` still shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="opennpu", description="An open NPU: RTL, golden model, compiler.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:       # bad input or an unusable file anywhere below
        print(f"opennpu {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BackendFailed as error:               # a build or simulator that failed: its first and last line
        lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        print(f"opennpu {args.command}: error: {lines[0]}" + (f" ... {lines[-1].strip()}" if len(lines) > 1 else ""),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:       # Ctrl-C: the handler may say what it cleaned up
        print(f"opennpu {args.command}: interrupted" + (f"; {interrupt}" if str(interrupt) else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
