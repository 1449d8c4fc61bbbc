"""``opennpu sweep SPEC.toml``: design-space sweep on Ray (see ``opennpu.sweep``); ``opennpu sweep
--report DIR`` rebuilds the Pareto plots, tables and summary from recorded results. Exit code 1 when
a recorded point or spot-check failed or a spot-check differs (the sweep still ran every other point),
2 for bad input."""
from __future__ import annotations

import importlib.util
import os

from opennpu.cli_common import emit, fail

__all__ = ["register"]


def register(sub):
    p = sub.add_parser("sweep", help="sweep configurations x workloads on Ray; Pareto fronts of cycles vs energy")
    p.add_argument("spec", nargs="?", help="sweep spec (TOML): workloads, axes, optional filter")
    p.add_argument("--address", default=None, help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: $RAY_ADDRESS, else a local Ray "
                   "started for the sweep)")
    p.add_argument("--workers", type=int, default=None, help="local Ray: CPUs to use (default: all)")
    p.add_argument("--out", default=None, help="results folder (default: sweep_<spec name>); a rerun resumes")
    p.add_argument("--report", metavar="DIR", default=None, help="rebuild plots and summary from DIR's results")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_sweep)


def _text(run: dict | None, report: dict) -> str:
    lines = []
    if run is not None:
        rate = f", {run['points_per_s']:.2f} points/s" if run["points_per_s"] else ""
        lines.append(f"sweep {run['name']}: {run['points']} points ({run['ran']} ran, {run['skipped']} already "
                     f"recorded): {run['ok']} ok, {run['failed']} failed, {run['unsupported']} unsupported "
                     f"[{run['address']}] in {run['run_s']:.1f} s{rate}")
        c = run["checks"]
        if c["ran"]:
            lines.append(f"  verilator spot-checks: {c['equal']} equal, {c['differ']} differ, {c['failed']} failed "
                         f"in {run['verify_s']:.1f} s")
    for name, w in report["workloads"].items():
        lines.append(f"  {name:<28} {w['points']:>5} points, front of {len(w['front'])}"
                     + (f" -> {w['plot']}" if w["plot"] else ""))
    lines.append(f"wrote {report['summary']}")
    return "\n".join(lines)


def _cmd_sweep(args) -> int:
    if bool(args.spec) == bool(args.report):
        return fail(args, "give either SPEC.toml or --report DIR")
    from opennpu.sweep.report import build_report
    if args.report:
        if args.out or args.address or args.workers:
            return fail(args, "--report takes only DIR (and --json)")
        report = build_report(args.report)
        emit(args, report, _text(None, report))
        return 0
    if args.workers is not None and args.workers < 1:
        return fail(args, f"--workers must be >= 1, got {args.workers}")
    from opennpu.sweep.spec import load_spec
    from opennpu.sweep.store import ResultStore
    spec = load_spec(args.spec)
    out = args.out or f"sweep_{spec.name}"
    ResultStore(out).check()
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if importlib.util.find_spec("ray") is None:
        return fail(args, "Ray is not installed: pip install 'opennpu[sweep]'")
    from opennpu.sweep.runner import run_sweep
    run = run_sweep(spec, out, address=address, workers=args.workers, progress=None if not args.json else False)
    report = build_report(out)
    emit(args, {**run, "report": report}, _text(run, report))
    return 1 if report["failed"] or report["checks"].get("differ") or report["checks"].get("failed") else 0
