"""Helpers shared by the CLI subcommands: config from flags, JSON or text output, clean errors."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from opennpu.config import DATAFLOWS, PRECISIONS, NpuConfig, parse_array

__all__ = ["add_config_args", "config_from_args", "emit", "fail", "check_output_file", "check_output_dir",
           "check_input_file", "busy"]


def add_config_args(parser, *, precision=True):
    parser.add_argument("--array", default="8x8", help="systolic array RxC (default 8x8)")
    parser.add_argument("--dataflow", default="ws", choices=DATAFLOWS)
    if precision:
        parser.add_argument("--precision", default="int8", choices=PRECISIONS)
    parser.add_argument("--act-depth", type=int, default=None, help="activation SRAM words")
    parser.add_argument("--wgt-depth", type=int, default=None, help="weight SRAM words")
    parser.add_argument("--acc-depth", type=int, default=None, help="accumulator SRAM words")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def config_from_args(args) -> NpuConfig:
    rows, cols = parse_array(args.array)
    extra = {k: v for k, v in (("act_depth", args.act_depth), ("wgt_depth", args.wgt_depth),
                               ("acc_depth", args.acc_depth)) if v is not None}
    precision = getattr(args, "precision", "int8")
    precisions = ("int8",) if precision == "int8" else ("int8", precision)
    return NpuConfig(rows=rows, cols=cols, dataflow=args.dataflow, precisions=precisions, **extra)


def emit(args, obj: dict, text: str):
    """Print ``obj`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(obj, indent=None, default=str) if args.json else text)


def check_output_file(path: str, flag: str):
    """Refuse, before any work, a file path that cannot be written: ValueError naming ``flag``."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path!r} is a directory; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path!r}: folder {str(folder)!r} is not writable")


def check_output_dir(path: str, flag: str):
    """Refuse, before any work, an output folder that is an existing file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path!r} is a file; give a folder (it is created if missing)")


def check_input_file(path: str, what: str):
    if not Path(path).is_file():
        raise ValueError(f"{what} {path!r} not found" if not Path(path).exists() else f"{what} {path!r} is not a file")


@contextmanager
def busy(args, text: str):
    """While long work runs: a spinner with the elapsed time on stderr, only where stderr is a
    terminal, never under ``--json`` (and none without rich, an optional dependency)."""
    if args.json or not sys.stderr.isatty():        # (before importing rich: it costs start-up time)
        yield
        return
    try:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    except ImportError:
        Progress = None
    if Progress is None:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        progress.add_task(text, total=None)
        yield


def fail(args, message: str, code: int = 2) -> int:
    print(f"opennpu {args.command}: error: {message}", file=sys.stderr)
    return code
