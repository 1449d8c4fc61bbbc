"""Differential tests: RTL (Amaranth simulator) vs golden model, outputs and every counter.

pysim runs the full NPU at ~1k cycles/s, so these programs are small; big programs run on Verilator
(tests/test_verilator.py).
"""
import numpy as np
import pytest

from opennpu.compiler.gemm import ACTIVATIONS, build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.checks import data_in_bytes
from opennpu.golden.deps import HazardError, OverlapError, order_program
from opennpu.golden.isa import AStep, Buf, Command, ErrorCode, Opcode, Precision, Wait
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import COUNTER_NAMES, Program, decode_counters
from opennpu.sim.driver import Npu


def small_config(rows, cols, **kw):
    return NpuConfig(rows=rows, cols=cols, act_depth=128, wgt_depth=64, acc_depth=64, **kw)


def assert_same(rtl, golden):
    """Outputs, status and counters equal; stalls only add cycles."""
    assert rtl.outputs == golden.outputs
    assert (rtl.error, rtl.rejected) == (golden.error, golden.rejected)
    stalls = rtl.counters["stall_cycles"]
    for name, value in golden.counters.items():
        expected = value + stalls if name in ("cycles", "stall_cycles") else value
        assert rtl.counters[name] == expected, name


@pytest.mark.parametrize("rows, cols, m, k, n, act, backpressure, per_channel", [
    (2, 2, 5, 3, 3, "none", None, False),   # K, N not multiples of the array
    (2, 2, 5, 3, 5, "relu", 4, True),       # per-channel requantization (LOAD_QUANT, ACTIVATE perchan)
    (3, 2, 6, 4, 7, "gelu", None, "single"),  # ... and TFLite's single rounding (CONFIG single_round)
    (2, 2, 9, 7, 5, "relu", 11, False),            # accumulation over 4 K tiles, back-pressure
    (3, 3, 7, 8, 4, "gelu", None, False),          # non-power-of-two array (bus 4 bytes)
    (4, 4, 12, 9, 7, "relu6", 3, False),
    (4, 4, 6, 16, 9, "sigmoid", 5, False),
    (3, 2, 5, 7, 5, "silu", None, False),          # non-square array
    (2, 4, 6, 5, 9, "tanh", 7, False),
])
def test_gemm_matches_golden(rows, cols, m, k, n, act, backpressure, per_channel):
    config = small_config(rows, cols)
    spec = random_gemm(m, k, n, "int8", act, seed=rows * 100 + m, per_channel=bool(per_channel),
                       single_round=per_channel == "single")
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    rtl = Npu(config, "pysim", backpressure=backpressure).run(gp.program)
    assert_same(rtl, golden)
    assert np.array_equal(gp.decode_output(rtl.outputs), spec.expected())
    if backpressure is not None:
        assert rtl.counters["stall_cycles"] > 0


@pytest.mark.parametrize("m, k, n, raw", [(3, 10, 13, False), (2, 6, 9, True)])
def test_transposed_gemm_matches_golden(m, k, n, raw):
    """The transposed product (bias digits in extra K entries; raw: int32 out) on the RTL."""
    config = small_config(4, 4)
    spec = random_gemm(m, k, n, "int8", "relu", seed=m)
    spec.raw = raw
    gp = build_gemm(config, spec, transpose=True)
    golden = GoldenNpu(config).run(gp.program)
    rtl = Npu(config, "pysim", backpressure=3).run(gp.program)
    assert_same(rtl, golden)
    assert np.array_equal(gp.decode_output(rtl.outputs), spec.expected())


def test_8x8_gemm_with_chunks_and_weight_ring():
    """M split into chunks (acc SRAM), weights cycling through a slot ring (weight SRAM too small)."""
    config = NpuConfig(rows=8, cols=8, act_depth=64, wgt_depth=24, acc_depth=16)
    spec = random_gemm(20, 20, 10, "int8", "relu", seed=2)
    gp = build_gemm(config, spec)
    assert len(gp.chunks) > 1
    golden = GoldenNpu(config).run(gp.program)
    assert_same(Npu(config, "pysim").run(gp.program), golden)


def _sram_dump(config):
    """STORE every SRAM word (the readback the bad-command tests compare)."""
    return [Command(Opcode.STORE, buf=Buf.ACT, addr=0, rows=config.act_depth),
            Command(Opcode.STORE, buf=Buf.WGT, addr=0, rows=config.wgt_depth),
            Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=config.acc_depth)]


BAD_COMMANDS = {
    "opcode 0": (0, ErrorCode.BAD_OPCODE),
    "opcode 15": ((1 << 100) | 15, ErrorCode.BAD_OPCODE),
    "reserved bits": (Command(Opcode.FENCE).encode() | (1 << 90), ErrorCode.BAD_FIELD),
    "LOAD past the end": (Command(Opcode.LOAD, buf=Buf.ACT, addr=14, rows=3), ErrorCode.BAD_RANGE),
    "LOAD zero rows": (Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=0), ErrorCode.BAD_RANGE),
    "LOAD to acc": (Command(Opcode.LOAD, buf=Buf.ACC, addr=0, rows=1), ErrorCode.BAD_FIELD),
    "CONFIG a8w4": (Command(Opcode.CONFIG, precision=Precision.A8W4, qmin=-128, qmax=127), ErrorCode.BAD_PRECISION),
    "CONFIG qmin>qmax": (Command(Opcode.CONFIG, qmin=5, qmax=4), ErrorCode.BAD_FIELD),
    "PRELOAD krows 3": (Command(Opcode.PRELOAD, addr=0, krows=3, ncols=1), ErrorCode.BAD_FIELD),
    "COMPUTE past acc": (Command(Opcode.COMPUTE, aaddr=0, accaddr=7, rows=2), ErrorCode.BAD_RANGE),
    "COMPUTE with OS fields": (Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, waddr=1), ErrorCode.BAD_FIELD),
    "COMPUTE astep 3": (Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, astep=3), ErrorCode.BAD_FIELD),
    "COMPUTE stride 2 past act": (Command(Opcode.COMPUTE, aaddr=10, accaddr=0, rows=4, astep=AStep.DOUBLE),
                                  ErrorCode.BAD_RANGE),         # words 10, 12, 14, 16 (of 16)
    "ACTIVATE past act": (Command(Opcode.ACTIVATE, accaddr=0, aaddr=15, rows=2, dest=0), ErrorCode.BAD_RANGE),
    "ACTIVATE ew with accaddr": (Command(Opcode.ACTIVATE, ew=1, accaddr=1, xaddr=0, yaddr=2, aaddr=4, rows=2),
                                 ErrorCode.BAD_FIELD),
    "ACTIVATE with yaddr, not ew": (Command(Opcode.ACTIVATE, accaddr=0, yaddr=2, aaddr=4, rows=2), ErrorCode.BAD_FIELD),
    "ACTIVATE ew y past act": (Command(Opcode.ACTIVATE, ew=1, xaddr=0, yaddr=15, aaddr=4, rows=2), ErrorCode.BAD_RANGE),
    "LOAD_LUT table reserved bit": (Command(Opcode.LOAD_LUT, table=1).encode() | (1 << 5), ErrorCode.BAD_FIELD),
    "STORE buf 3": (Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=1).encode() | (3 << 4), ErrorCode.BAD_FIELD),
}


@pytest.mark.parametrize("name", list(BAD_COMMANDS))
def test_bad_command_rejected_and_nothing_written(name):
    """The bad command sets the sticky error, is counted, writes nothing (the data-in a rejected LOAD
    takes is consumed and dropped), and later commands still run."""
    word, code = BAD_COMMANDS[name]
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=8)
    rng = np.random.default_rng(1)
    act_words = rng.integers(0, 256, size=(4, config.bus_bytes), dtype=np.uint8)
    setup = [Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=4)]
    follow = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2),
              Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
              Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=4, accumulate=0)]
    wgt_words = rng.integers(0, 256, size=(2, config.bus_bytes), dtype=np.uint8)
    dropped = rng.integers(0, 256, size=data_in_bytes(word, config), dtype=np.uint8).tobytes()
    assert bool(dropped) == name.startswith(("LOAD past", "LOAD_LUT"))
    program = order_program(Program(setup + [word] + follow + _sram_dump(config),
                                    act_words.tobytes() + dropped + wgt_words.tobytes()), config)
    golden = GoldenNpu(config).run(program)
    assert golden.error == code and golden.rejected == 1
    clean = GoldenNpu(config).run(order_program(Program(setup + follow + _sram_dump(config),
                                                        act_words.tobytes() + wgt_words.tobytes()), config))
    assert golden.outputs == clean.outputs            # the bad command changed nothing
    rtl = Npu(config, "pysim").run(program)
    assert_same(rtl, golden)


def test_tokens_that_name_a_rejected_commands_unit_do_not_hang():
    """A token waits only for what runs: after a rejected LOAD (LD drops its 4 beats) and a rejected
    PRELOAD, a COMPUTE waiting on every unit runs once the drop is done; RTL == golden, and the sticky
    error stays the LOAD's."""
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=8)
    every = Wait.LD | Wait.PL | Wait.EX | Wait.EX_OLDER | Wait.ACT | Wait.ST
    program = Program([Command(Opcode.LOAD, buf=Buf.ACT, addr=15, rows=4),
                       Command(Opcode.PRELOAD, addr=7, krows=2, ncols=2),
                       Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=2, wait=every),
                       Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=2, wait=Wait.EX)], bytes(4 * config.bus_bytes))
    model = GoldenNpu(config)
    golden = model.run(program)
    assert (golden.error, golden.rejected) == (ErrorCode.BAD_RANGE, 2)
    (_, load), (_, preload), (_, compute), _ = model.trace
    assert preload == load + 1 and compute == load + 4 + 1          # LD is busy dropping the 4 beats
    assert_same(Npu(config, "pysim", backpressure=3).run(program), golden)


def test_drivers_refuse_an_unordered_program_before_running():
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=8)
    program = Program([Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=2),
                       Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=2)], bytes(2 * config.bus_bytes))
    with pytest.raises(HazardError, match="command 1 COMPUTE.*command 0 LOAD"):
        Npu(config, "pysim").run(program)


def test_sticky_error_keeps_first_code():
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=8)
    program = Program([0, Command(Opcode.CONFIG, qmin=1, qmax=0), Command(Opcode.FENCE)])
    rtl = Npu(config, "pysim").run(program)
    assert (rtl.error, rtl.rejected) == (ErrorCode.BAD_OPCODE, 2)
    assert_same(rtl, GoldenNpu(config).run(program))


def test_counters_command_snapshot():
    config = small_config(2, 2)
    gp = build_gemm(config, random_gemm(4, 3, 2, seed=3))
    program = order_program(Program(gp.program.commands + [Command(Opcode.COUNTERS)], gp.program.data_in), config)
    golden = GoldenNpu(config).run(program)
    rtl = Npu(config, "pysim", backpressure=9).run(program)
    size = config.beats(8 * len(COUNTER_NAMES)) * config.bus_bytes
    assert rtl.outputs[:-size] == golden.outputs[:-size]
    snap_g, snap_r = decode_counters(golden.outputs[-size:]), decode_counters(rtl.outputs[-size:])
    assert snap_r["cycles"] - snap_r["stall_cycles"] == snap_g["cycles"] > 0
    assert {k: v for k, v in snap_r.items() if k not in ("cycles", "stall_cycles")} == \
        {k: v for k, v in snap_g.items() if k not in ("cycles", "stall_cycles")}


def test_activate_to_activation_sram_chains_layers():
    """ACTIVATE dest=0 writes results back on chip; a STORE reads them (no host round trip)."""
    config = small_config(2, 2)
    spec = random_gemm(5, 2, 2, seed=4)
    gp = build_gemm(config, spec)
    commands = [c if c.op != Opcode.ACTIVATE else Command(Opcode.ACTIVATE, accaddr=c.accaddr,
                                                          aaddr=100 + c.aaddr, rows=c.rows, dest=0)
                for c in gp.program.commands]
    program = order_program(Program(commands + [Command(Opcode.STORE, buf=Buf.ACT, addr=100, rows=5)],
                                    gp.program.data_in), config)
    golden = GoldenNpu(config).run(program)
    stored = np.frombuffer(golden.outputs, np.int8).reshape(5, config.bus_bytes)[:, :2]
    assert np.array_equal(stored, spec.expected())
    assert_same(Npu(config, "pysim").run(program), golden)


INT4 = ("int8", "a8w4", "a4w4")


@pytest.mark.parametrize("rows, cols, m, k, n, precision, act, backpressure", [
    (2, 2, 5, 7, 5, "a8w4", "relu", None),      # two K rows per weight word, odd K
    (2, 2, 5, 7, 5, "a4w4", "none", None),      # two 4-bit MACs per PE, odd K (high nibble masked)
    (4, 4, 9, 13, 7, "a4w4", "gelu", 3),
    (4, 2, 6, 9, 5, "a8w4", "none", 2),
])
def test_int4_modes_match_golden(rows, cols, m, k, n, precision, act, backpressure):
    config = small_config(rows, cols, precisions=INT4)
    spec = random_gemm(m, k, n, precision, act, seed=5)
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    assert_same(Npu(config, "pysim", backpressure=backpressure).run(gp.program), golden)
    assert np.array_equal(gp.decode_output(golden.outputs), spec.expected())


@pytest.mark.parametrize("rows, cols, m, k, n, precision, act, backpressure", [
    (2, 2, 5, 3, 3, "int8", "none", None),      # K shorter than the array width: idle issue cycles
    (4, 4, 9, 13, 7, "int8", "relu", 3),        # several M and N tiles, back-pressure
    (3, 2, 7, 8, 5, "int8", "gelu", None),      # non-square, odd rows
    (2, 2, 5, 7, 5, "a8w4", "relu6", 5),        # one weight word per two K steps, odd K
    (4, 4, 6, 10, 9, "a4w4", "none", None),     # two 4-bit MACs per PE per step
])
def test_output_stationary_matches_golden(rows, cols, m, k, n, precision, act, backpressure):
    config = small_config(rows, cols, dataflow="os", precisions=INT4 if rows % 2 == 0 == cols % 2 else ("int8",))
    spec = random_gemm(m, k, n, precision, act, seed=6)
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    assert_same(Npu(config, "pysim", backpressure=backpressure).run(gp.program), golden)
    assert np.array_equal(gp.decode_output(golden.outputs), spec.expected())


def test_output_stationary_weight_stream_in_chunks():
    """Weights that do not fit stream in two alternating slots, K in chunks accumulated in the drain."""
    config = NpuConfig(rows=2, cols=2, dataflow="os", act_depth=64, wgt_depth=8, acc_depth=8)
    spec = random_gemm(5, 11, 5, "int8", "relu", seed=3)
    gp = build_gemm(config, spec)
    assert sum(c.op == Opcode.COMPUTE and c.accumulate for c in gp.program.commands) > 0
    golden = GoldenNpu(config).run(gp.program)
    assert_same(Npu(config, "pysim").run(gp.program), golden)
    assert np.array_equal(gp.decode_output(golden.outputs), spec.expected())


OS_BAD_COMMANDS = {
    "PRELOAD": (Command(Opcode.PRELOAD, addr=0, krows=1, ncols=1), ErrorCode.BAD_OPCODE),
    "mrows 0": (Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, waddr=0, mrows=0, ncols=1), ErrorCode.BAD_FIELD),
    "ncols 3": (Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, waddr=0, mrows=1, ncols=3), ErrorCode.BAD_FIELD),
    "weights past the end": (Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=3, waddr=2, mrows=2, ncols=2),
                             ErrorCode.BAD_RANGE),
    "output rows past acc": (Command(Opcode.COMPUTE, aaddr=0, accaddr=7, rows=1, waddr=0, mrows=2, ncols=2),
                             ErrorCode.BAD_RANGE),
}


@pytest.mark.parametrize("name", list(OS_BAD_COMMANDS))
def test_output_stationary_bad_command_rejected_and_nothing_written(name):
    word, code = OS_BAD_COMMANDS[name]
    config = NpuConfig(rows=2, cols=2, dataflow="os", act_depth=16, wgt_depth=4, acc_depth=8)
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, size=(8, config.bus_bytes), dtype=np.uint8).tobytes()
    setup = [Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=4), Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=4)]
    follow = [Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=4, accumulate=0, waddr=0, mrows=2, ncols=2)]
    program = order_program(Program(setup + [word] + follow + _sram_dump(config), data), config)
    golden = GoldenNpu(config).run(program)
    assert golden.error == code and golden.rejected == 1
    clean = order_program(Program(setup + follow + _sram_dump(config), data), config)
    assert golden.outputs == GoldenNpu(config).run(clean).outputs
    assert_same(Npu(config, "pysim").run(program), golden)


def test_all_activations_listed():
    assert set(ACTIVATIONS) == {"none", "relu", "relu6", "gelu", "silu", "sigmoid", "tanh"}


def test_rejected_count_saturates_like_golden():
    """Golden model and RTL agree past 65535 rejected commands (the 16-bit status count saturates)."""
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=8)
    golden = GoldenNpu(config).run(Program([0] * 65537 + [Command(Opcode.FENCE)]))
    assert golden.rejected == 65535 and golden.error == ErrorCode.BAD_OPCODE


def test_back_to_back_computes_forward_the_accumulator_word():
    """A COMPUTE dispatches in the cycle the one before it moves to the drain slot, so its first row
    enters the array right behind that one's last row; when it accumulates into the word that row
    writes a cycle later, the EX unit forwards the word being written (``hdl/execute_unit.py``)."""
    import random
    from opennpu.golden.checks import data_in_bytes
    config = small_config(2, 2)
    rng = random.Random(5)
    compute = lambda aaddr, accaddr, rows, acc: Command(Opcode.COMPUTE, aaddr=aaddr, accaddr=accaddr, rows=rows,
                                                       accumulate=acc)
    pairs = [(compute(0, 0, 3, 0), compute(3, 2, 2, 1)),     # B's first row: A's last word
             (compute(5, 6, 1, 0), compute(6, 6, 1, 1)),     # one row each
             (compute(7, 7, 1, 1), compute(0, 7, 2, 1)),     # both accumulate
             (compute(1, 9, 2, 0), compute(4, 8, 3, 1))]     # 10 two cycles behind 9 (the port's transparency)
    commands = [Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8), Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2),
                Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2)]
    for pair in pairs:
        commands += [*pair, Command(Opcode.FENCE)]        # (the drain slot is empty for the pair's first)
    commands.append(Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=11))
    data = bytes(rng.randrange(256) for _ in range(sum(data_in_bytes(c, config) for c in commands)))
    program = order_program(Program(commands, data), config)
    npu = GoldenNpu(config)
    golden = npu.run(program)
    d = [cycle for cmd, cycle in npu.trace if cmd.op == Opcode.COMPUTE]
    assert [d[2 * i + 1] - d[2 * i] for i in range(len(pairs))] == [a.rows for a, _ in pairs]   # no gap
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_weight_tiles_follow_each_other_through_the_array():
    """Short COMPUTEs on a new weight tile each (matrix-vector): every COMPUTE right behind its PRELOAD,
    every PRELOAD right behind the COMPUTE before (refilling the buffer of the one before that), with no
    token (the PE weight writes follow the rows' wavefront: the tightest case); RTL == golden, outputs
    and counters, with and without back-pressure, and the outputs equal those of the same program with
    a full wait for PL on every COMPUTE and for EX on every PRELOAD."""
    import random
    config = small_config(4, 4)
    rng = random.Random(3)
    tiles, rows = 5, 2
    commands = [Command(Opcode.CONFIG, multiplier=1 << 30, shift=-8, qmin=-128, qmax=127),
                Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=4 * tiles),
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=rows * tiles), Command(Opcode.LOAD_BIAS, bank=0)]
    for t in range(tiles):
        commands += [Command(Opcode.PRELOAD, addr=4 * t, krows=4 - t % 2, ncols=4),
                     Command(Opcode.COMPUTE, aaddr=rows * t, accaddr=rows * t, rows=rows)]
    commands.append(Command(Opcode.ACTIVATE, accaddr=0, aaddr=0, rows=rows * tiles, dest=1, bank=0))
    data = b"".join(bytes(rng.randrange(256) if c.op == Opcode.LOAD else 0 for _ in range(data_in_bytes(c, config)))
                    for c in commands)                          # (zero bias)
    program = order_program(Program(commands, data), config)
    assert all(c.wait == 0 for c in program.commands[5:-1])          # (after the first PRELOAD / COMPUTE)
    strict = Program([c.with_wait(c.wait | {Opcode.PRELOAD: Wait.EX, Opcode.COMPUTE: Wait.PL}.get(c.op, 0))
                      for c in program.commands], data)
    model = GoldenNpu(config)
    golden, slow = model.run(program), GoldenNpu(config).run(strict)
    starts = [d for cmd, d in model.trace if cmd.op in (Opcode.PRELOAD, Opcode.COMPUTE)]
    assert [b - a for a, b in zip(starts[2:], starts[3:])] == [1, 3] * (tiles - 2) + [1]   # (PL takes 4 cycles)
    assert len(set(golden.outputs)) > 8                         # (not saturated: a stale weight would show)
    assert golden.outputs == slow.outputs and golden.counters["cycles"] < slow.counters["cycles"]
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_streaming_commands_read_behind_their_writer():
    """PRELOAD and COMPUTE stream behind the LOADs of what they read, the ACTIVATE behind the COMPUTE
    (``Wait.STREAM``, each from the first word written: the tightest case); RTL == golden, outputs and
    counters, with and without back-pressure, and the outputs equal those of the same program with
    every STREAM replaced by a full wait for its source unit."""
    import random
    from opennpu.golden.timing import STREAM_SOURCE, WAIT_OF_UNIT
    from opennpu.golden.deps import UNIT_OF
    config = small_config(2, 2)
    rng = random.Random(7)
    commands = [Command(Opcode.CONFIG, multiplier=1 << 30, shift=-7, qmin=-128, qmax=127),
                Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                Command(Opcode.LOAD_BIAS, bank=0),          # (PRELOAD is done when the COMPUTE may follow)
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=12),
                Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=12),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=0, rows=12, dest=1, bank=0)]
    payload = {Opcode.LOAD_BIAS: lambda n: np.array([300, -200], "<i4").tobytes().ljust(n, b"\0")}
    data = b"".join(payload.get(c.op, lambda n: bytes(rng.randrange(256) for _ in range(n)))(data_in_bytes(c, config))
                    for c in commands)
    program = order_program(Program(commands, data), config)
    assert [c.op for c in program.commands if c.wait & Wait.STREAM] == [Opcode.PRELOAD, Opcode.COMPUTE,
                                                                         Opcode.ACTIVATE]
    strict = Program([c.with_fields(wait=c.wait & ~Wait.STREAM | WAIT_OF_UNIT[STREAM_SOURCE[UNIT_OF[c.op]]])
                      if c.wait & Wait.STREAM else c for c in program.commands], data)
    model = GoldenNpu(config)
    golden, slow = model.run(program), GoldenNpu(config).run(strict)
    (_, load), (_, compute) = model.trace[4:6]             # (the activation LOAD and its COMPUTE)
    assert compute == load + 1                                  # (the tightest a COMPUTE can follow)
    assert len(set(golden.outputs)) > 12                        # (not saturated: a stale word would show)
    assert golden.outputs == slow.outputs and golden.counters["cycles"] < slow.counters["cycles"]
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_activates_of_other_banks_follow_back_to_back():
    """ACTIVATEs alternating bias banks and per-tensor / per-channel requantization, each right behind
    the one before (ACT takes it as the last row is read, while that one's rows are in the activation
    unit: each row's bias, multiplier and shift travel with it); RTL == golden, outputs and counters,
    with and without back-pressure, and the outputs equal those of the same program with every
    ACTIVATE waiting for the one before."""
    import random
    config = small_config(2, 2)
    rng = random.Random(11)
    quant = [(np.array([rng.randrange(1 << 29, 1 << 31) for _ in range(2)], "<i4").tobytes()
              + np.array([-9, -6], np.int8).tobytes()).ljust(data_in_bytes(Command(Opcode.LOAD_QUANT, bank=b), config),
                                                            b"\0") for b in (0, 1)]
    commands = [Command(Opcode.CONFIG, multiplier=(1 << 30) + 12345, shift=-7, qmin=-128, qmax=127),
                Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=12),
                Command(Opcode.LOAD_BIAS, bank=0), Command(Opcode.LOAD_BIAS, bank=1),
                Command(Opcode.LOAD_QUANT, bank=0), Command(Opcode.LOAD_QUANT, bank=1),
                Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=12), Command(Opcode.FENCE)]
    acts = [(0, 0), (1, 1), (0, 1), (1, 0), (1, 1), (0, 0)]
    commands += [Command(Opcode.ACTIVATE, accaddr=2 * i, aaddr=0, rows=2, dest=1, bank=bank, perchan=perchan)
                 for i, (bank, perchan) in enumerate(acts)]
    payload = {Opcode.LOAD_BIAS: lambda c, n: np.array([900, -700] if c.bank else [-300, 200], "<i4").tobytes().ljust(n, b"\0"),
               Opcode.LOAD_QUANT: lambda c, n: quant[c.bank]}
    data = b"".join(payload.get(c.op, lambda c, n: bytes(rng.randrange(256) for _ in range(n)))(c, data_in_bytes(c, config))
                    for c in commands)
    program = order_program(Program(commands, data), config)
    strict = Program([c.with_wait(c.wait | Wait.ACT) if c.op == Opcode.ACTIVATE else c for c in program.commands], data)
    model = GoldenNpu(config)
    golden, slow = model.run(program), GoldenNpu(config).run(strict)
    starts = [d for cmd, d in model.trace if cmd.op == Opcode.ACTIVATE]
    assert [b - a for a, b in zip(starts, starts[1:])] == [3] * (len(acts) - 1)        # (rows + 1)
    assert len(set(golden.outputs)) > 8                         # (not saturated: a wrong parameter would show)
    assert golden.outputs == slow.outputs and golden.counters["cycles"] < slow.counters["cycles"]
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_computes_read_strided_and_held_activation_words():
    """A COMPUTE's rows read words ``aaddr + j * step`` (``AStep``: 1, 2 or 0): the RTL equals the golden
    model, which equals the product of the words picked out by hand; a stride-2 COMPUTE waits for the
    LOAD it reads (it would overtake a stream), a held one may stream behind it."""
    from opennpu.golden.checks import data_in_bytes
    config = small_config(2, 2)
    rng = np.random.default_rng(7)
    computes = [Command(Opcode.COMPUTE, aaddr=1, accaddr=0, rows=5, astep=AStep.DOUBLE),      # words 1, 3, .. 9
                Command(Opcode.COMPUTE, aaddr=4, accaddr=0, rows=5, astep=AStep.HOLD, accumulate=1),  # word 4
                Command(Opcode.COMPUTE, aaddr=10, accaddr=5, rows=3, astep=AStep.UNIT)]           # 10, 11, 12
    commands = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=13), *computes,
                Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=8)]
    data = rng.integers(0, 256, sum(data_in_bytes(c, config) for c in commands), dtype=np.uint8).tobytes()
    program = order_program(Program(commands, data), config)
    waits = [cmd.wait for cmd in program.commands if cmd.op == Opcode.COMPUTE]
    assert waits[0] & Wait.LD and not waits[0] & Wait.STREAM
    with pytest.raises(HazardError):
        GoldenNpu(config).run(Program([*program.commands[:3], program.commands[3].with_wait(Wait.STREAM),
                                       *program.commands[4:]], data))
    golden = GoldenNpu(config).run(program)
    bus = config.bus_bytes
    w = np.frombuffer(data[:2 * bus], np.int8).reshape(2, bus)[:, :2].astype(np.int64)
    a = np.frombuffer(data[2 * bus:15 * bus], np.int8).reshape(13, bus)[:, :2].astype(np.int64)
    want = np.concatenate([a[1:10:2] @ w + a[[4] * 5] @ w, a[10:13] @ w])
    acc = np.frombuffer(golden.outputs, "<i4").reshape(8, -1)[:, :2]
    assert np.array_equal(acc, want)
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


@pytest.mark.parametrize("rows, cols", [(2, 2), (3, 2)])
def test_elementwise_activates_add_through_the_tables(rows, cols):
    """An elementwise ACTIVATE (``ew``) presents ``X[x + 128]`` and ``Y[y + 128]`` of two activation words
    to the activation unit: with TFLite ADD's rescaling of each input in the tables it equals the host's
    ADD exactly; one that reads the previous one's output needs ``Wait.ACT`` (the golden model refuses it
    without); the RTL equals the golden model, with and without back-pressure."""
    from opennpu.compiler.graph import AddAttrs
    from opennpu.compiler.host_kernels import add
    from opennpu.golden import numerics
    from opennpu.golden.isa import LutTable
    config = small_config(rows, cols)
    rng = np.random.default_rng(rows)
    a = AddAttrs(in_zp=(-3, 11), in_multiplier=(1 << 30, 1_518_500_250), in_shift=(0, -1), left_shift=20,
                 out_multiplier=1_789_569_707, out_shift=-19, out_zp=5, qmin=-128, qmax=127)
    q = np.arange(-128, 128)
    tables = np.stack([numerics.requantize((q - zp) << a.left_shift, m, s)
                       for zp, m, s in zip(a.in_zp, a.in_multiplier, a.in_shift)])
    words = rng.integers(-128, 128, (12, rows))
    words[0, 0], words[6, 0] = 127, -128
    bus = config.bus_bytes
    lut_data = tables.astype("<i4").tobytes() + bytes(data_in_bytes(Command(Opcode.LOAD_LUT, table=1), config) - 2048)
    act_data = b"".join(w.astype(np.int8).tobytes() + bytes(bus - rows) for w in words)
    commands = [Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=12), Command(Opcode.LOAD_LUT, table=LutTable.EW),
                Command(Opcode.CONFIG, multiplier=a.out_multiplier, shift=a.out_shift, out_zp=a.out_zp,
                        qmin=a.qmin, qmax=a.qmax),
                Command(Opcode.ACTIVATE, ew=1, xaddr=0, yaddr=6, aaddr=12, rows=6),        # x + y
                Command(Opcode.ACTIVATE, ew=1, xaddr=12, yaddr=3, aaddr=18, rows=3),       # (x + y) + y'
                Command(Opcode.ACTIVATE, ew=1, xaddr=0, yaddr=6, rows=6, dest=1),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=21, rows=2),      # right behind: its own words
                Command(Opcode.STORE, buf=Buf.ACT, addr=12, rows=11)]
    program = order_program(Program(commands, act_data + lut_data), config)
    assert program.commands[4].wait & Wait.ACT
    overlap = Command(Opcode.ACTIVATE, ew=1, xaddr=0, yaddr=6, aaddr=4, rows=6)      # writes y's words 6..9 late
    with pytest.raises(OverlapError, match="other than in place"):
        order_program(Program(commands[:3] + [overlap], act_data + lut_data), config)
    with pytest.raises(HazardError):
        GoldenNpu(config).run(Program([*program.commands[:4], program.commands[4].with_wait(0),
                                       *program.commands[5:]], program.data_in))
    golden = GoldenNpu(config).run(program)
    lanes = min(rows, cols)
    first = add(words[:6, :lanes], words[6:, :lanes], a)
    second = add(first[:3], words[3:6, :lanes], a)
    out = np.frombuffer(golden.outputs, np.int8)
    pushed = out[:6 * bus].reshape(6, bus)[:, :cols]
    stored = out[6 * bus:].reshape(11, bus)[:, :rows]
    assert np.array_equal(pushed[:, :lanes], first) and np.array_equal(stored[:6, :lanes], first)
    assert np.array_equal(stored[6:9, :lanes], second) and not stored[:, lanes:].any()
    assert np.all(stored[9:, :lanes] == a.out_zp)                 # (zero accumulators and bias)
    assert golden.counters["act_reads"] == 2 * (6 + 3 + 6) + 11 and golden.counters["acc_reads"] == 2
    for backpressure in (None, 3):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)
