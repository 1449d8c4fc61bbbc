"""One sweep point, measured on the golden model (cycle-exact with the RTL): ``evaluate(point)`` builds
the workload's program(s) for the point's configuration, runs them and returns one flat record.

A point the compilers cannot build (a GEMM that cannot be scheduled, a model on a dataflow or precision
the model compiler does not target) is ``"unsupported"`` with
the reason; any other error makes it ``"failed"`` with the error. Neither raises: a sweep never stops on
one point.

Figures of an ``"ok"`` point:
- ``cycles``, ``busy_cycles``, ``stall_cycles``, ``macs``, ``dma_in_bytes``, ``dma_out_bytes``: the counters;
- ``utilization``: ``macs / (cycles * rows * cols * macs_per_pe)`` (``macs_per_pe`` 2 in a4w4, else 1);
- ``bound_cycles`` = ``max(compute, dma_in, dma_out)`` with ``compute = ceil(macs / (rows * cols *
  macs_per_pe))``, ``dma_in = ceil(dma_in_bytes / bus_bytes)``, ``dma_out`` likewise: a lower bound on
  the cycles of the program that ran (one beat per cycle on each stream); ``bound`` names the largest
  term, ``bound_fraction`` is ``bound_cycles / cycles``;
- ``energy_fj`` (the hardware counter) and its breakdown ``energy_<part>_fj``, which sums to it exactly
  (checked: a point whose parts do not add up fails);
- ``sram_bytes`` (all three SRAMs) and ``mac_units`` (``rows * cols``): the area proxy;
- ``fits``: every layer's activations, weights (packed at the point's precision) and int32 results each
  fit their SRAM at once;
- ``programs``: host round trips (1 for a GEMM; a model may need more).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .spec import Point

__all__ = ["evaluate", "measure", "figures", "Measured", "Unsupported", "ENERGY_PARTS", "FIGURES"]

ENERGY_PARTS = ("mac", "act_sram", "wgt_sram", "acc_sram", "dma", "act_unit")
FIGURES = ("cycles", "busy_cycles", "stall_cycles", "macs", "utilization", "bound", "bound_cycles",
           "bound_fraction", "energy_fj", *(f"energy_{p}_fj" for p in ENERGY_PARTS), "dma_in_bytes",
           "dma_out_bytes", "sram_bytes", "mac_units", "fits", "programs")


class Unsupported(Exception):
    """The compilers cannot build this point (the message says why)."""


@dataclass
class Measured:
    """One point run on one backend: summed counters, the layers' ``(m, k, n)``, the number of programs
    and the outputs (for comparing backends)."""
    counters: dict
    layers: list
    programs: int
    outputs: object


def evaluate(point: Point, model_bytes: bytes | None = None) -> dict:
    """``{"status", "error", "wall_s", **figures}`` for ``point`` (figures only when ``"ok"``).
    ``model_bytes``: the model file's content for model workloads (it travels with the task)."""
    start = time.perf_counter()
    try:
        run = measure(point, model_bytes)
        record = {"status": "ok", "error": "", **figures(point, run.counters, run.layers), "programs": run.programs}
    except Unsupported as reason:
        record = {"status": "unsupported", "error": str(reason)}
    except Exception as error:                                         # noqa: BLE001 - recorded, never raised
        record = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    record["wall_s"] = time.perf_counter() - start
    return record


def measure(point: Point, model_bytes: bytes | None = None, backend: str = "golden") -> Measured:
    """Build ``point``'s program(s) and run them on ``backend``; ``Unsupported`` if they cannot be
    built, ``RuntimeError`` if the NPU rejects a command or a GEMM's outputs are wrong."""
    return _gemm(point, backend) if point.workload.kind == "gemm" else _model(point, model_bytes, backend)


def _gemm(point: Point, backend: str) -> Measured:
    import numpy as np

    from opennpu.compiler.gemm import build_gemm, random_gemm
    from opennpu.sim.driver import Npu
    m, k, n = point.workload.shape
    spec = random_gemm(m, k, n, point.precision, point.workload.act, point.workload.seed)
    try:
        gp = build_gemm(point.config, spec)
    except ValueError as error:
        raise Unsupported(f"the GEMM compiler cannot build it: {error}") from None
    result = Npu(point.config, backend).run(gp.program)
    _check_error(result)
    outputs = gp.decode_output(result.outputs)
    if not np.array_equal(outputs, spec.expected()):
        raise RuntimeError("the outputs differ from the direct numpy product")
    return Measured(result.counters, [(m, k, n)], 1, outputs)


def _model(point: Point, model_bytes, backend: str) -> Measured:
    if point.precision != "int8":
        raise Unsupported(f"the model compiler emits int8 programs only, not {point.precision}")
    if point.config.dataflow != "ws":
        raise Unsupported(f"the model compiler targets the weight-stationary dataflow, not {point.config.dataflow}")
    if point.workload.kind == "tflite":
        return _graph(point, model_bytes, backend)
    from opennpu.compiler.model_program import compile_model, run_model
    from opennpu.compiler.model_report import random_input
    from opennpu.compiler.onnx_import import NotAChain, import_onnx
    try:
        qmodel = import_onnx(model_bytes)
    except NotAChain:                   # a residual net, pools, ...: node by node
        return _graph(point, model_bytes, backend)
    except ValueError as error:
        raise Unsupported(f"the model compiler cannot build it: {error}") from None
    try:
        compiled = compile_model(qmodel, point.config, batch=None if qmodel.input.batch else point.workload.batch)
    except ValueError as error:
        raise Unsupported(f"the model compiler cannot build it: {error}") from None
    run = run_model(compiled, random_input(qmodel, compiled.batch, point.workload.seed), backend)
    for result in run.results:
        _check_error(result)
    return Measured(run.counters, [(info.m, info.k, info.n) for info in compiled.layers], compiled.stages,
                    run.values)


def _graph(point: Point, model_bytes, backend: str) -> Measured:
    """A TFLite model, or an ONNX graph that is not a chain: its NPU ops on ``backend``
    (``compiler.graph_npu``), counters summed over them; host ops (ADD, pooling, softmax) cost no NPU
    cycles."""
    from opennpu.compiler.graph_npu import random_graph_input, run_on_npu
    if point.workload.kind == "tflite":
        from opennpu.compiler.tflite_import import import_tflite
        graph = import_tflite(model_bytes)          # (a corrupt file: ValueError, the point fails)
    else:
        from opennpu.compiler.onnx_import import import_onnx_graph
        graph = import_onnx_graph(model_bytes).graph
    x = random_graph_input(graph, point.workload.batch, point.workload.seed)
    outputs, records = run_on_npu(graph, x, point.config, backend)
    npu = [r for r in records if r["device"] == "npu"]
    counters = {name: sum(r["counters"][name] for r in npu) for name in npu[0]["counters"]}
    return Measured(counters, [tuple(g) for r in npu for g in r["gemms"]], sum(r["programs"] for r in npu),
                    outputs[0])


def _check_error(result):
    if int(result.error) != 0:
        raise RuntimeError(f"the NPU rejected {result.rejected} command(s): error code {int(result.error)}")


def figures(point: Point, counters: dict, layers: list) -> dict:
    """The figures of an ``"ok"`` point from its counters and its layers' ``(m, k, n)``."""
    from opennpu.golden.model import energy_by_event
    c = point.config
    macs_per_pe = 2 if point.precision == "a4w4" else 1
    peak = c.rows * c.cols * macs_per_pe
    cycles = counters["cycles"]
    terms = {"compute": -(-counters["macs"] // peak), "dma_in": -(-counters["dma_in_bytes"] // c.bus_bytes),
             "dma_out": -(-counters["dma_out_bytes"] // c.bus_bytes)}
    bound = max(terms, key=terms.get)
    e = energy_by_event(c, counters)
    parts = {"mac": e["macs"], "act_sram": e["act_reads"] + e["act_writes"],
             "wgt_sram": e["wgt_reads"] + e["wgt_writes"], "acc_sram": e["acc_reads"] + e["acc_writes"],
             "dma": e["dma_in_bytes"] + e["dma_out_bytes"], "act_unit": e["act_ops"]}
    if sum(parts.values()) & c.counter_mask != counters["energy_fj"]:
        raise RuntimeError(f"the energy breakdown sums to {sum(parts.values())} fJ, the energy_fj counter "
                           f"reads {counters['energy_fj']}")
    a_bits = 4 if point.precision == "a4w4" else 8
    w_bits = 8 if point.precision == "int8" else 4
    fits = all(-(-m * k * a_bits // 8) <= c.act_depth * c.act_word_bytes
               and -(-k * n * w_bits // 8) <= c.wgt_depth * c.wgt_word_bytes
               and 4 * m * n <= c.acc_depth * c.acc_word_bytes for m, k, n in layers)
    return {"cycles": cycles, "busy_cycles": counters["busy_cycles"], "stall_cycles": counters["stall_cycles"],
            "macs": counters["macs"], "utilization": counters["macs"] / (cycles * peak) if cycles else 0.0,
            "bound": bound, "bound_cycles": terms[bound], "bound_fraction": terms[bound] / cycles if cycles else 0.0,
            "energy_fj": counters["energy_fj"], **{f"energy_{p}_fj": v for p, v in parts.items()},
            "dma_in_bytes": counters["dma_in_bytes"], "dma_out_bytes": counters["dma_out_bytes"],
            "sram_bytes": c.act_depth * c.act_word_bytes + c.wgt_depth * c.wgt_word_bytes
            + c.acc_depth * c.acc_word_bytes, "mac_units": c.rows * c.cols, "fits": fits}
