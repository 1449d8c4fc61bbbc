"""Run a sweep's points as Ray tasks and record each one as it finishes.

Embedded by default: ``ray.init(address="local", num_cpus=workers)`` starts a private Ray on this
machine and stops it afterwards. With an ``address`` (``--address`` or ``RAY_ADDRESS``) it joins an
existing cluster and ships the package as the job's ``runtime_env`` ``working_dir`` (see
``source.stage_package``; unlike ``py_modules`` it also keeps the driver's current folder off the workers'
path, so a driver started in a source tree cannot shadow the shipped copy), so the workers need no
install; model files travel as task arguments. A cluster with Ray's token authentication needs
``RAY_AUTH_MODE=token`` (and the token) in the driver's environment, as for any Ray job.

Points whose key is already in the results are skipped; every finished point is appended to the
results at once, a failing task is recorded as failed (the sweep goes on), and an interrupt or a kill
loses only the points in flight.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .point import evaluate
from .source import code_version, stage_package
from .spec import SweepSpec
from .store import ResultStore

__all__ = ["run_sweep", "ray_session", "default_workers"]


def default_workers() -> int:
    return os.cpu_count() or 1


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
                raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {error}") from None
        else:
            ray.init(address="local", num_cpus=workers or default_workers(), include_dashboard=False,
                     object_store_memory=128 << 20, **quiet)
        yield ray
    finally:
        ray.shutdown()
        if staged is not None:
            shutil.rmtree(staged.parent, ignore_errors=True)


def _progress(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    columns = (TextColumn("sweep"), BarColumn(), TextColumn(
        "{task.fields[ok]} ok, {task.fields[failed]} failed, {task.fields[unsupported]} unsupported, "
        "{task.fields[remaining]} remaining"), TimeElapsedColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)


def run_sweep(spec: SweepSpec, out, *, address: str | None = None, workers: int | None = None,
              progress: bool | None = None) -> dict:
    """Run every point of ``spec`` not yet in ``out``'s results; returns the counts and timings.
    ``progress``: a bar on stderr (default: when stderr is a terminal)."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    store = ResultStore(out)
    store.check()
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
    counts, start_s, run_s = Counter(), 0.0, 0.0
    state = "interrupted"
    try:
        if todo:
            start = time.perf_counter()
            with ray_session(address, workers) as ray:
                start_s = time.perf_counter() - start
                run_start = time.perf_counter()
                _run(ray, todo, store, version, counts,
                     sys.stderr.isatty() if progress is None else progress)
                run_s = time.perf_counter() - run_start
        state = "finished"
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{sum(counts.values())} new point(s) recorded in {store.folder}; "
                                f"rerun the same command to resume") from None
    finally:
        store.write_sidecar({**meta, "state": state, "updated": datetime.now(timezone.utc).isoformat()})
    ran = sum(counts.values())
    return {**{k: v for k, v in meta.items() if k != "spec_text"}, "out": str(store.folder),
            "skipped": len(points) - len(todo), "ran": ran, "ok": counts["ok"], "failed": counts["failed"],
            "unsupported": counts["unsupported"], "ray_start_s": start_s, "run_s": run_s,
            "points_per_s": ran / run_s if run_s else None}


def _run(ray, todo, store: ResultStore, version: str, counts: Counter, show: bool):
    task = ray.remote(num_cpus=1, max_retries=0)(evaluate)
    models = {}
    for _, point in todo:
        path = point.workload.path
        if path is not None and path not in models:
            models[path] = ray.put(Path(path).read_bytes())
    pending = {task.remote(point, models.get(point.workload.path)): (key, point) for key, point in todo}
    with _progress(show, len(todo)) as bar:
        job = bar.add_task("sweep", total=len(todo), ok=0, failed=0, unsupported=0, remaining=len(todo))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key, point = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as error:     # the worker died, the task could not run, ...
                    record = {"status": "failed", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
                store.append({"key": key, "code_version": version, **point.params(), **record})
                counts[record["status"]] += 1
                bar.update(job, advance=1, ok=counts["ok"], failed=counts["failed"],
                           unsupported=counts["unsupported"], remaining=len(pending))
