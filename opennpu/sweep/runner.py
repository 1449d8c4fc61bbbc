"""Run a sweep's points as Ray tasks and record each one as it finishes.

Embedded by default: ``ray.init(address="local", num_cpus=workers)`` starts a private Ray on this
machine and stops it afterwards. With an ``address`` (``--address`` or ``RAY_ADDRESS``) it joins an
existing cluster and ships the package as the job's ``runtime_env`` ``working_dir`` (see
``source.stage_package``; unlike ``py_modules`` it also keeps the driver's current folder off the workers'
path, so a driver started in a source tree cannot shadow the shipped copy), so the workers need no
install; model files travel as task arguments. A cluster with Ray's token authentication needs
``RAY_AUTH_MODE=token`` (and the token) in the driver's environment, as for any Ray job.

Then the Verilator spot-checks of ``[verify]`` run the same way (``verify.py``). Points whose key is
already in the results are skipped; every finished point is appended to the
results at once, a failing task is recorded as failed (the sweep goes on), and an interrupt or a kill
loses only the points in flight.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .point import evaluate
from .source import code_version, stage_package
from .spec import SweepSpec
from .store import ResultStore
from .verify import BACKEND, select, spot_check

__all__ = ["run_sweep", "ray_session", "default_workers"]


def default_workers() -> int:
    return os.cpu_count() or 1


def check_address(address: str, timeout_s: float = 5.0):
    """Refuse quickly (``ConnectionError``) a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing
    listens: ``ray.init`` itself retries for minutes. Other forms (``auto``) are left to Ray."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address.strip())
    if not match:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster at {address!r}: {error}") from None


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None):
    """A connected ``ray`` module: a local instance with ``workers`` CPUs, or the cluster at
    ``address`` with the package shipped in the runtime_env. Shut down (and the staged copy removed)
    on exit. ``ConnectionError`` when the cluster cannot be reached."""
    import ray
    staged = None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address:
            staged = stage_package()
            try:
                ray.init(address=address, runtime_env={"working_dir": str(staged.parent)}, **quiet)
            except Exception as error:                         # noqa: BLE001 - Ray raises many kinds here
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {first} (a cluster with "
                                      f"token authentication also needs RAY_AUTH_MODE=token and its token)") from None
        else:
            ray.init(address="local", num_cpus=workers or default_workers(), include_dashboard=False,
                     object_store_memory=128 << 20, **quiet)
        yield ray
    finally:
        ray.shutdown()
        if staged is not None:
            shutil.rmtree(staged.parent, ignore_errors=True)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=Console(stderr=True),
                    disable=not enabled)


def run_sweep(spec: SweepSpec, out, *, address: str | None = None, workers: int | None = None,
              progress: bool | None = None) -> dict:
    """Run every point of ``spec`` not yet in ``out``'s results, then the Verilator spot-checks the spec
    asks for (``[verify]``) not yet done; returns the counts and timings. ``progress``: a bar on stderr
    (default: when stderr is a terminal)."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    store = ResultStore(out)
    store.check()
    if address:
        check_address(address)
    version = code_version()
    points = {}
    for point in spec.points:                         # two spellings of one configuration run once
        points.setdefault(point.key(version), point)
    store.open()
    done = store.keys()
    todo = [(key, point) for key, point in points.items() if key not in done]
    meta = {"name": spec.name, "spec": str(spec.path), "spec_text": spec.text, "code_version": version,
            "points": len(points), "filtered_out": spec.filtered_out, "address": address or "local",
            "workers": None if address else workers or default_workers()}
    store.write_sidecar({**meta, "state": "running", "started": datetime.now(timezone.utc).isoformat()})
    show = sys.stderr.isatty() if progress is None else progress
    counts, checks, timing = Counter(), Counter(), {"ray_start_s": 0.0, "run_s": 0.0, "verify_s": 0.0}
    state = "interrupted"
    try:
        with ExitStack() as stack:
            ray = None

            def connect():
                start = time.perf_counter()
                session = stack.enter_context(ray_session(address, workers))
                timing["ray_start_s"] = time.perf_counter() - start
                return session

            if todo:
                ray = connect()
                start = time.perf_counter()
                _run(ray, evaluate, todo, lambda key, point, record: store.append(
                    {"key": key, "code_version": version, **point.params(), **record}), counts, "points", show)
                timing["run_s"] = time.perf_counter() - start
            pending = _pending_checks(spec, store, points)
            if pending:
                ray = ray or connect()
                start = time.perf_counter()
                store.checks.open()
                _run(ray, spot_check, pending, lambda key, point, record: store.checks.append(
                    {"key": key, "code_version": version, **record}), checks, f"{BACKEND} checks", show)
                timing["verify_s"] = time.perf_counter() - start
        state = "finished"
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{sum(counts.values())} new point(s) recorded in {store.folder}; "
                                f"rerun the same command to resume") from None
    finally:
        store.write_sidecar({**meta, "state": state, "updated": datetime.now(timezone.utc).isoformat()})
    ran = sum(counts.values())
    return {**{k: v for k, v in meta.items() if k != "spec_text"}, "out": str(store.folder),
            "skipped": len(points) - len(todo), "ran": ran, "ok": counts["ok"], "failed": counts["failed"],
            "unsupported": counts["unsupported"], **timing,
            "points_per_s": ran / timing["run_s"] if timing["run_s"] else None,
            "checks": {"ran": sum(checks.values()), "equal": checks["equal"], "differ": checks["differ"],
                       "failed": checks["failed"]}}


def _pending_checks(spec: SweepSpec, store: ResultStore, points: dict) -> list:
    """The spot-checks ``spec.verify`` selects among the recorded ok points, less those already done."""
    if spec.verify is None:
        return []
    ok = {row["key"] for row in store.rows() if row["status"] == "ok"}
    done = {row["key"] for row in store.checks.rows()}
    chosen = select([(key, point) for key, point in points.items() if key in ok], *spec.verify)
    return [(key, point) for key, point in chosen if key not in done]


def _run(ray, function, items: list, record_row, counts: Counter, label: str, show: bool):
    """Run ``function(point, model_bytes)`` as one Ray task per ``(key, point)``; ``record_row(key, point,
    record)`` as each finishes (a task Ray could not run is recorded as failed)."""
    task = ray.remote(num_cpus=1, max_retries=0)(function)
    models = {}
    for _, point in items:
        path = point.workload.path
        if path is not None and path not in models:
            models[path] = ray.put(Path(path).read_bytes())
    pending = {task.remote(point, models.get(point.workload.path)): (key, point) for key, point in items}
    with _progress(show) as bar:
        job = bar.add_task(label, total=len(items), counts="")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key, point = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as error:     # the worker died, the task could not run, ...
                    record = {"status": "failed", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
                record_row(key, point, record)
                counts[record["status"]] += 1
                bar.update(job, advance=1, counts=", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                           + f", {len(pending)} remaining")
