"""Counter width (``NpuConfig.counter_bits``) and the profile without an energy accumulator
(``energy_counter=False``): golden == RTL when counters wrap, derived energy == accumulated energy, and
the default width holds a 2048^3 GEMM."""
import pytest

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.isa import Command, Opcode, Precision
from opennpu.golden.model import COUNTER_BEATS_BYTES, GoldenNpu, derive_energy, event_costs
from opennpu.golden.program import COUNTER_NAMES, Program, decode_counters
from opennpu.sim.driver import Npu

DEFAULT_BITS = NpuConfig().counter_bits
SMALL = dict(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=16, precisions=("int8", "a4w4"))


def mixed_program(config: NpuConfig) -> Program:
    """An int8 GEMM then an a4w4 GEMM, each followed by a COUNTERS snapshot."""
    commands, data = [], b""
    for precision, seed in (("int8", 1), ("a4w4", 2)):
        gp = build_gemm(config, random_gemm(5, 7, 3, precision, "relu", seed))
        commands += gp.program.commands + [Command(Opcode.COUNTERS)]
        data += gp.program.data_in
    return Program(commands, data)


def test_config_validates_counter_options():
    for bad in (0, 65, 8.0, True):
        with pytest.raises(ValueError, match="counter_bits"):
            NpuConfig(counter_bits=bad)
    with pytest.raises(ValueError, match="energy_counter"):
        NpuConfig(energy_counter=1)
    assert NpuConfig(counter_bits=10).counter_mask == 1023


@pytest.mark.parametrize("bits", [6, 11])
def test_counters_wrap_alike_in_golden_and_rtl(bits):
    """Narrow counters wrap: the RTL's final counters and its COUNTERS snapshots equal the golden model's,
    which are the unwrapped counts modulo 2^bits."""
    config = NpuConfig(**SMALL, counter_bits=bits)
    program = mixed_program(config)
    wide = GoldenNpu(config.with_(counter_bits=64)).run(program)
    golden = GoldenNpu(config).run(program)
    rtl = Npu(config, "pysim").run(program)
    assert max(wide.counters.values()) > config.counter_mask          # something does wrap
    assert golden.counters == {k: v & config.counter_mask for k, v in wide.counters.items()}
    assert rtl.counters["stall_cycles"] == 0
    assert rtl.counters == golden.counters
    assert rtl.outputs == golden.outputs                               # snapshots included
    assert (rtl.error, rtl.rejected) == (golden.error, golden.rejected)


@pytest.mark.parametrize("bus_bytes", [16, 32])
def test_counter_memory_rows_of_several_counters(bus_bytes):
    """With ``bus_bytes`` >= 16 a row of the counter memory holds a readout beat of two or more counters
    (``hdl/counters.py``): the final counters and the COUNTERS snapshots equal the golden model's."""
    config = NpuConfig(**SMALL, bus_bytes=bus_bytes)
    program = mixed_program(config)
    golden, rtl = GoldenNpu(config).run(program), Npu(config, "pysim").run(program)
    assert rtl.counters == golden.counters
    assert rtl.outputs == golden.outputs                               # snapshots included


@pytest.mark.parametrize("bits", [12, DEFAULT_BITS])
def test_derived_energy_equals_the_accumulator(bits):
    """Without the accumulator the hardware reads 0 in ``energy_fj`` (snapshots too) and the driver derives
    exactly the energy the accumulator of the full profile holds, on a program mixing int8 and a4w4, under
    back-pressure; at 12 bits the energy wraps, and the derived value wraps alike."""
    full = NpuConfig(**SMALL, counter_bits=bits)
    lean = full.with_(energy_counter=False)
    program = mixed_program(full)
    wide = GoldenNpu(full.with_(counter_bits=64)).run(program).counters
    assert 0 < wide["int4_macs"] < wide["macs"]
    assert (wide["energy_fj"] > full.counter_mask) == (bits < DEFAULT_BITS)
    accumulated = Npu(full, "pysim", backpressure=5).run(program)
    derived = Npu(lean, "pysim", backpressure=5).run(program)
    assert accumulated.counters["energy_fj"] == wide["energy_fj"] & full.counter_mask
    assert derived.counters == accumulated.counters
    assert derived.outputs != accumulated.outputs                      # the snapshots' energy slots
    assert GoldenNpu(lean).run(program).counters == GoldenNpu(full).run(program).counters
    size = full.beats(COUNTER_BEATS_BYTES) * full.bus_bytes
    lean_snap, full_snap = decode_counters(derived.outputs[-size:]), decode_counters(accumulated.outputs[-size:])
    assert lean_snap["energy_fj"] == 0 and full_snap["energy_fj"] > 0
    assert derive_energy(lean, lean_snap) == full_snap["energy_fj"]


def max_energy_per_cycle(config: NpuConfig) -> int:
    """The most energy one cycle's events can add: two activation reads (EX, ST) and writes (LD, WB), two
    weight reads (PL or EX, ST) and a write, three accumulator reads (EX, WB, ST) and a write, a beat in,
    a beat out, a full row of MACs (either precision) and a row of activation ops."""
    cost = event_costs(config)
    macs = max(config.rows * config.cols * cost["macs"],
               2 * config.rows * config.cols * event_costs(config, Precision.A4W4)["macs"])
    return (2 * cost["act_reads"] + 2 * cost["act_writes"] + 2 * cost["wgt_reads"] + cost["wgt_writes"]
            + 3 * cost["acc_reads"] + cost["acc_writes"] + config.bus_bytes * cost["dma_in_bytes"]
            + config.bus_bytes * cost["dma_out_bytes"] + macs + config.cols * cost["act_ops"])


@pytest.mark.parametrize("side, m, n, precision, dataflow", [
    (1, 1, 2, "int8", "ws"), (1, 2, 2, "int8", "os"), (2, 4, 4, "a4w4", "ws"), (64, 128, 128, "int8", "ws")])
def test_default_width_holds_a_2048_cubed_gemm(side, m, n, precision, dataflow):
    """The compiled M x 2048 x N GEMM, scaled to 2048^3 (its M chunks and N tiles repeat the same work),
    stays below 2^counter_bits with a factor 4 to spare, and so does the bound of its cycles times the
    most energy a cycle can add. 1x1 is the worst array (one-row M chunks at K = 2048)."""
    config = NpuConfig(rows=side, cols=side, precisions=(precision,), dataflow=dataflow, counter_bits=64)
    counters = GoldenNpu(config).run(build_gemm(config, random_gemm(m, 2048, n, precision, "none", 1)).program).counters
    scale = (2048 // m) * (2048 // n)
    limit = 1 << DEFAULT_BITS
    assert counters["macs"] * scale == 2048 ** 3
    for name in COUNTER_NAMES:
        assert 4 * counters[name] * scale < limit, name
    assert counters["cycles"] * scale * max_energy_per_cycle(config) < limit
