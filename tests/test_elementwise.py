"""TFLite's ADD on the NPU (``compiler/elementwise.py``): exact against the host kernel for any scales."""
import numpy as np
import pytest

from opennpu.compiler.elementwise import CHUNK_WORDS, add_program, add_tables, run_add
from opennpu.compiler.graph import AddAttrs
from opennpu.compiler.host_kernels import add
from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.isa import Opcode
from opennpu.sim.driver import Npu


def tflite_add_attrs(s1, s2, s_out, zps, out_zp, qmin=-128, qmax=127):
    """AddAttrs as TFLite's PrepareGeneralSubOp computes them (int8: left shift 20)."""
    twice_max = 2 * max(s1, s2)
    (m1, e1), (m2, e2) = (numerics.quantize_multiplier(s / twice_max) for s in (s1, s2))
    m_out, e_out = numerics.quantize_multiplier(twice_max / ((1 << 20) * s_out))
    return AddAttrs(in_zp=zps, in_multiplier=(m1, m2), in_shift=(e1, e2), left_shift=20, out_multiplier=m_out,
                    out_shift=e_out, out_zp=out_zp, qmin=qmin, qmax=qmax)


@pytest.mark.parametrize("seed", range(6))
def test_add_equals_the_host_kernel(seed):
    """Random scales and zero points (ReLU clamps in some), every pair of codes in the first words:
    the NPU's ADD equals the host's TFLite ADD exactly, and moves the words it must."""
    rng = np.random.default_rng(seed)
    s1, s2, s_out = np.exp(rng.uniform(-6, 0, 3))
    a = tflite_add_attrs(s1, s2, s_out, tuple(int(z) for z in rng.integers(-128, 128, 2)),
                         int(rng.integers(-128, 128)), qmin=int(rng.choice([-128, 0])))
    config = NpuConfig(rows=4, cols=4)
    codes = np.arange(-128, 128)
    x = np.concatenate([np.repeat(codes, 256), rng.integers(-128, 128, 1000)]).reshape(-1, 8)
    y = np.concatenate([np.tile(codes, 256), rng.integers(-128, 128, 1000)]).reshape(-1, 8)
    out, counters = run_add(a, x, y, config)
    assert np.array_equal(out, add(x, y, a))
    words = -(-x.size // 4)
    assert counters["act_reads"] == 2 * words and counters["acc_reads"] == counters["macs"] == 0
    assert counters["dma_out_bytes"] == words * config.bus_bytes


def test_add_tables_hold_each_inputs_rescaling():
    a = tflite_add_attrs(0.05, 0.02, 0.1, (3, -7), 0)
    t = add_tables(a)
    assert t.shape == (2, 256)
    assert t[0][3 + 128] == 0 and t[1][-7 + 128] == 0          # the zero points map to 0
    assert np.all(np.diff(t[0]) > 0) and np.all(np.diff(t[1]) > 0)


def test_add_overlaps_loads_with_the_activates():
    """Chunks alternate between two regions per input: the cycles stay within 15 % of the data-in beats."""
    a = tflite_add_attrs(0.05, 0.02, 0.1, (0, 0), 0)
    config = NpuConfig(rows=16, cols=16)
    x = np.random.default_rng(0).integers(-128, 128, (16 * CHUNK_WORDS * 8,))
    program = add_program(a, x, x[::-1], config)
    activates = [c for c in program.commands if c.op == Opcode.ACTIVATE]
    assert len(activates) == 8 and {c.xaddr for c in activates} == {0, 2 * CHUNK_WORDS}
    result = Npu(config, "golden").run(program)
    beats = len(program.data_in) // config.bus_bytes
    assert beats <= result.counters["cycles"] <= 1.15 * beats


def test_add_refuses_mismatched_inputs():
    a = tflite_add_attrs(0.05, 0.02, 0.1, (0, 0), 0)
    config = NpuConfig(rows=2, cols=2)
    with pytest.raises(ValueError, match="one size"):
        add_program(a, np.zeros(4), np.zeros(5), config)
    with pytest.raises(ValueError, match="int8"):
        add_program(a, np.full(4, 300), np.zeros(4), config)
    with pytest.raises(ValueError, match="act_depth"):
        add_program(a, np.zeros(4), np.zeros(4), config.with_(act_depth=3))


def test_graph_add_of_a_constant_and_an_activation_runs_on_the_npu():
    """An ``add`` node whose first operand is a constant of the activation's shape: the NPU's result equals
    the host's for every sample, and the record says ``npu``."""
    from opennpu.compiler.graph import Graph, Node, QTensor
    from opennpu.compiler.graph_npu import run_on_npu
    from opennpu.compiler.host_kernels import run_graph
    a = tflite_add_attrs(0.05, 0.02, 0.1, (4, -2), 3, qmin=3)
    rng = np.random.default_rng(1)
    tensors = {"x": QTensor("x", (3, 5), "int8", (0.02,), (-2,)),
               "c": QTensor("c", (3, 5), "int8", (0.05,), (4,), data=rng.integers(-128, 128, (3, 5))),
               "y": QTensor("y", (3, 5), "int8", (0.1,), (3,))}
    graph = Graph(tensors, [Node("add", "add", ("c", "x"), "y", a)], ("x",), ("y",))
    x = rng.integers(-128, 128, (4, 3, 5)).astype(np.int8)
    outputs, records = run_on_npu(graph, x, NpuConfig(rows=2, cols=2))
    assert np.array_equal(outputs[0], run_graph(graph, x)[0])
    assert records[0]["device"] == "npu" and records[0]["cycles"] > 0
