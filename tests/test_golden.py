"""Golden model and GEMM builder: bit-exact against direct numerics and the PyTorch reference, counters
consistent with the program, cycle model invariants, clear errors on bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from opennpu.compiler.gemm import ACTIVATIONS, GemmSpec, bias_digits, build_gemm, gemm_bound, random_gemm, transposed_spec
from opennpu.config import NpuConfig
from opennpu.golden.deps import HazardError, check_program, order_program
from opennpu.golden.checks import act_span, data_in_bytes, validate
from opennpu.golden.isa import WAIT_FIELD, AStep, Buf, Command, ErrorCode, Opcode, Precision, Wait
from opennpu.golden.model import GoldenNpu, ProgramError, advance
from opennpu.golden.program import Program
from opennpu.golden.reference import gemm_reference
from opennpu.golden.timing import Unit, array_latency, stream_delay

ALL = ("int8", "a8w4", "a4w4")


@settings(max_examples=300, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40), side=st.sampled_from([2, 4, 6, 8]),
       precision=st.sampled_from(ALL), act=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**16),
       act_depth=st.sampled_from([64, 512]), acc_depth=st.sampled_from([8, 64]), per_channel=st.booleans(),
       dataflow=st.sampled_from(["ws", "os"]))
def test_golden_matches_numerics_and_torch(m, k, n, side, precision, act, seed, act_depth, acc_depth,
                                           per_channel, dataflow):
    config = NpuConfig(rows=side, cols=side, precisions=ALL, act_depth=act_depth, wgt_depth=64,
                       acc_depth=acc_depth, dataflow=dataflow)
    spec = random_gemm(m, k, n, precision, act, seed, per_channel=per_channel, single_round=seed % 2 == 1)
    try:
        gp = build_gemm(config, spec)
    except ValueError as error:            # K too deep for a tiny SRAM: a clear refusal
        assert "SRAM" in str(error)
        return
    result = GoldenNpu(config).run(gp.program)
    out = gp.decode_output(result.outputs)
    assert np.array_equal(out, spec.expected())
    ref = gemm_reference(spec.a, spec.w, spec.bias, spec.multiplier, spec.shift, spec.out_zp, spec.qmin,
                         spec.qmax, spec.lut, single_round=spec.single_round)
    assert np.array_equal(out, ref)
    c = result.counters
    if dataflow == "ws":        # (os a4w4 counts the padded half step of an odd K)
        assert c["macs"] == (np.prod(gp.computed.shape) if gp.transposed else m * k * n)
    assert c["busy_cycles"] <= c["cycles"]
    assert c["macs"] <= c["busy_cycles"] * side * side * (2 if precision == "a4w4" else 1)
    assert c["dma_in_bytes"] == len(gp.program.data_in)
    assert c["dma_out_bytes"] == len(result.outputs)


def test_int4_halves_weight_traffic_and_a4w4_doubles_macs_per_cycle():
    config = NpuConfig(rows=8, cols=8, precisions=ALL)
    counters = {}
    for precision in ALL:
        gp = build_gemm(config, random_gemm(128, 64, 64, precision, seed=1))
        counters[precision] = GoldenNpu(config).run(gp.program).counters
    assert counters["a8w4"]["wgt_writes"] * 2 == counters["int8"]["wgt_writes"]
    assert counters["a8w4"]["wgt_reads"] * 2 == counters["int8"]["wgt_reads"]
    assert counters["a4w4"]["busy_cycles"] * 2 == counters["int8"]["busy_cycles"]
    assert counters["a4w4"]["energy_fj"] < counters["int8"]["energy_fj"]


def test_large_gemm_keeps_the_array_busy():
    config = NpuConfig(rows=8, cols=8)
    gp = build_gemm(config, random_gemm(256, 256, 256, seed=0))
    result = GoldenNpu(config).run(gp.program)
    assert result.counters["busy_cycles"] / result.counters["cycles"] > 0.95


def test_cycle_model_overlaps_loads_with_compute():
    """The COMPUTE streams behind the LOAD of its rows (it reads each row after the LOAD wrote it); a second,
    independent LOAD dispatches while the COMPUTE is still running; the ordering adds only the tokens the
    hazards need."""
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    program = order_program(Program([Command(Opcode.LOAD, buf=0, addr=0, rows=20),
                                     Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=20),
                                     Command(Opcode.LOAD, buf=0, addr=32, rows=20)], bytes(40 * config.bus_bytes)),
                            config)
    assert [c.wait for c in program.commands] == [0, Wait.STREAM, 0]
    npu = GoldenNpu(config)
    npu.run(program)
    (_, load0), (_, compute), (_, load1) = npu.trace
    assert compute == load0 + 1                        # streams behind its data (RAW on ACT[0, 20))
    assert load1 == load0 + 20 < npu.timeline.release[Unit.EX]   # independent: in the LOAD's last beat
    conflicting = order_program(Program(program.commands[:2] + [Command(Opcode.LOAD, buf=0, addr=10, rows=20)],
                                        program.data_in), config)
    assert conflicting.commands[2].wait == Wait.EX
    npu = GoldenNpu(config)
    npu.run(conflicting)
    assert npu.trace[2][1] > npu.trace[1][1] + 20       # WAR: waits until the COMPUTE read its rows


def test_unordered_hazard_names_both_commands():
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    load_act = Command(Opcode.LOAD, buf=0, addr=0, rows=20)
    compute = Command(Opcode.COMPUTE, aaddr=4, accaddr=0, rows=2)
    program = Program([load_act, compute], bytes(20 * config.bus_bytes))
    for run in (lambda p: GoldenNpu(config).run(p), lambda p: check_program(p, config)):
        with pytest.raises(HazardError, match=r"command 1 COMPUTE.*command 0 LOAD.*ACT\[4:6\].*wait=<Wait.LD"):
            run(program)
    assert order_program(program, config).commands[1].wait == Wait.LD
    # A later LOAD orders the first one (LD runs one command at a time): the COMPUTE needs no token.
    covered = Program([load_act, Command(Opcode.LOAD, buf=1, addr=0, rows=2), compute], bytes(22 * config.bus_bytes))
    check_program(covered, config)
    assert order_program(covered, config).commands[2].wait == 0


def test_ex_older_token_waits_for_the_compute_in_the_drain_slot():
    """COMPUTE 1 writes ACC[0:2); COMPUTE 2 (other rows) drains behind it; a STORE of ACC[0:2) needs only
    COMPUTE 1 done: ``EX_OLDER``, which dispatches before COMPUTE 2 has drained."""
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    program = order_program(Program([Command(Opcode.LOAD, buf=0, addr=0, rows=40),
                                     Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=2),
                                     Command(Opcode.COMPUTE, aaddr=2, accaddr=8, rows=30),
                                     Command(Opcode.STORE, buf=2, addr=0, rows=2)], bytes(40 * config.bus_bytes)),
                            config)
    assert program.commands[3].wait == Wait.EX_OLDER
    npu = GoldenNpu(config)
    npu.run(program)
    store = npu.trace[3][1]
    assert store < npu.timeline.release[Unit.EX]                 # COMPUTE 2 still in flight
    stricter = Program(program.commands[:3] + [program.commands[3].with_fields(wait=Wait.EX)], program.data_in)
    npu2 = GoldenNpu(config)
    npu2.run(stricter)
    assert npu2.trace[3][1] == npu.timeline.release[Unit.EX] > store


@pytest.mark.parametrize("kwargs, match", [
    (dict(rows=0), "rows"), (dict(cols=65), "cols"), (dict(dataflow="xy"), "dataflow"),
    (dict(precisions=("int16",)), "precisions"), (dict(act_depth=1), "act_depth"),
    (dict(bus_bytes=3), "bus_bytes"), (dict(rows=3, cols=3, precisions=("a4w4",)), "even"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NpuConfig(**kwargs)


def test_builder_rejects_bad_operands():
    with pytest.raises(ValueError, match="matching"):
        GemmSpec(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(2), 1 << 30, 0)
    with pytest.raises(ValueError, match="int4"):
        GemmSpec(np.full((2, 2), 9), np.zeros((2, 2)), np.zeros(2), 1 << 30, 0, precision="a4w4")
    with pytest.raises(ValueError, match="not supported"):
        build_gemm(NpuConfig(rows=2, cols=2), random_gemm(2, 2, 2, "a8w4"))
    with pytest.raises(ValueError, match="activation"):
        random_gemm(2, 2, 2, act="swish")


def test_short_data_in_is_an_error():
    config = NpuConfig(rows=2, cols=2)
    with pytest.raises(ProgramError, match="ran out"):
        GoldenNpu(config).run(Program([Command(Opcode.LOAD, buf=0, addr=0, rows=2)], bytes(2)))


@pytest.mark.parametrize("precision", ALL)
@pytest.mark.parametrize("m, k, n", [(37, 100, 21), (9, 64, 40), (70, 33, 5)])
def test_streamed_activations_are_exact(m, k, n, precision):
    """``n_stream`` (every step reloads its activation tile, tall M chunks whatever K) computes the same
    GEMM; with K too long for the activation SRAM to hold a chunk's tiles it takes fewer cycles."""
    config = NpuConfig(rows=4, cols=4, precisions=ALL, act_depth=64, wgt_depth=32, acc_depth=64)
    spec = random_gemm(m, k, n, precision, "relu", seed=m + k + n)
    gp = build_gemm(config, spec, "n_stream")
    result = GoldenNpu(config).run(gp.program)
    assert np.array_equal(gp.decode_output(result.outputs), spec.expected())
    assert result.counters["macs"] == m * k * n
    if k >= 64:
        n_outer = GoldenNpu(config).run(build_gemm(config, spec, "n_outer").program).counters["cycles"]
        assert result.counters["cycles"] < n_outer


def test_chosen_order_is_the_fastest_simulated_one():
    """Small GEMMs: ``build_gemm`` keeps the fastest of the orders, of A @ W and, for M <= cols < N, of
    the transposed product (none is pruned that would have won; the transposed one may also take
    shorter chunks, so it can beat every fixed order); a long-K GEMM too large to simulate takes the
    streamed order, about 3x fewer cycles than n_outer."""
    config = NpuConfig(rows=16, cols=16)
    for m, k, n in [(64, 64, 64), (8, 4096, 64), (32, 1024, 32), (16, 256, 256), (128, 2048, 64)]:
        spec = random_gemm(m, k, n, seed=1)
        cycles = {(order, transpose): GoldenNpu(config).run(build_gemm(config, spec, order, transpose).program)
                  .counters["cycles"] for order in ("n_outer", "k_outer", "n_stream")
                  for transpose in ((False, True) if m <= config.cols < n else (False,))}
        gp = build_gemm(config, spec)
        chosen = GoldenNpu(config).run(gp.program).counters["cycles"]
        assert chosen <= min(cycles.values()), (m, k, n, cycles, chosen)
        assert gp.transposed == (min(cycles, key=cycles.get)[1] or chosen < min(cycles.values())), (m, k, n)
    spec = random_gemm(64, 4096, 64, seed=1)
    gp = build_gemm(config, spec)
    assert len(gp.chunks) == 1 and gp.chunks[0] == (0, 64)      # n_stream: one chunk of all 64 rows


def test_a_huge_gemm_takes_the_compact_order_within_a_few_percent():
    """1024^3 on 16x16: n_outer (chunks of 32 rows, 131,072 steps) is estimated fastest, n_stream (chunks
    of 512, 8,192 steps) within ``COMPACT_WITHIN``: the builder takes n_stream, 16x fewer commands."""
    config, spec = NpuConfig(rows=16, cols=16), random_gemm(1024, 1024, 1024, seed=1)
    from opennpu.compiler.gemm import COMPACT_STEPS, COMPACT_WITHIN, _estimate, _steps
    est = {o: _estimate(config, spec, o) for o in ("n_outer", "n_stream")}
    assert est["n_outer"] < est["n_stream"] <= COMPACT_WITHIN * est["n_outer"]
    assert _steps(config, spec, "n_outer", None) > COMPACT_STEPS
    gp = build_gemm(config, spec)
    assert gp.chunks == [(0, 512), (512, 512)] and len(gp.program.commands) < 40000


@settings(max_examples=200, deadline=None)
@given(r=st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=8))
def test_bias_digits_are_int8_and_exact(r):
    digits, coefficients = bias_digits(np.array(r))
    assert np.array_equal(digits @ coefficients, r)
    assert digits.shape == (len(r), len(coefficients))
    assert np.abs(digits).max(initial=0) <= 127 and np.abs(coefficients).max(initial=0) <= 127
    assert len(coefficients) <= max(abs(x) for x in r) // 127 // 127 + 2


def test_bias_digits_of_a_common_bias_take_no_k_entries():
    spec = random_gemm(3, 20, 30, seed=4)
    spec.bias[:] = 1234
    t = transposed_spec(spec)
    assert t.shape == (30, 20, 3) and np.array_equal(t.bias, [1234] * 3)


@pytest.mark.parametrize("m, k, n, act, raw", [(1, 40, 50, "relu", False), (4, 33, 70, "gelu", False),
                                               (6, 16, 40, "none", True), (8, 100, 9, "relu6", False)])
def test_transposed_product_matches_numerics(m, k, n, act, raw):
    """Y^T = W^T A^T with the bias in extra K entries (or added on the host, raw) decodes to A @ W."""
    config = NpuConfig(rows=8, cols=8, act_depth=256, wgt_depth=64, acc_depth=64)
    spec = random_gemm(m, k, n, "int8", act, seed=m + k)
    spec.raw = raw
    gp = build_gemm(config, spec, transpose=True)
    assert gp.transposed and gp.computed.shape[0] == n and gp.computed.shape[2] == m
    result = GoldenNpu(config).run(gp.program)
    assert np.array_equal(gp.decode_output(result.outputs), spec.expected())
    assert np.array_equal(gp.computed.expected().T + (spec.bias if raw else 0), spec.expected())


def test_transposed_product_needs_int8_and_per_tensor_requantization():
    config = NpuConfig(rows=4, cols=4, precisions=ALL)
    for spec in (random_gemm(2, 8, 9, per_channel=True), random_gemm(2, 8, 9, "a4w4"), random_gemm(2, 8, 9, "a8w4")):
        with pytest.raises(ValueError, match="transposed product needs int8"):
            build_gemm(config, spec, transpose=True)
        assert not build_gemm(config, spec).transposed
    wide = random_gemm(2, 8, 9)
    wide.bias[:2] = [-2**31, 2**31 - 1]           # 2^31 of spread: 133,000 digit entries, refused at once
    with pytest.raises(ValueError, match="takes biases within"):
        build_gemm(config, wide, transpose=True)
    assert not build_gemm(config, wide).transposed


def test_matrix_vector_streams_the_weights_at_the_bus_rate():
    """Issue 19: a batch-8 layer stays within 1.1x of its bound (the weight bytes over the bus), as the
    transposed product and as A @ W itself, whose weight tiles follow each other through the array's
    wavefront (it waited for a PE weight buffer to drain every step before: about 2x)."""
    config = NpuConfig(rows=16, cols=16)
    spec = random_gemm(8, 1024, 1024, seed=1)
    gp = build_gemm(config, spec)
    cycles = GoldenNpu(config).run(gp.program).counters["cycles"]
    plain = GoldenNpu(config).run(build_gemm(config, spec, transpose=False).program).counters["cycles"]
    bound = gemm_bound(config, 8, 1024, 1024)
    assert bound["limit"] == "data_in"
    assert cycles <= 1.1 * bound["bound"] and plain <= 1.1 * bound["bound"], (cycles, plain, bound)


def test_with_wait_is_with_fields_without_the_checks():
    cmd = Command(Opcode.COMPUTE, aaddr=3, accaddr=1, rows=5, accumulate=1)
    assert cmd.with_wait(Wait.LD | Wait.EX) == cmd.with_fields(wait=Wait.LD | Wait.EX)
    assert cmd.with_wait(5).rows == 5 and cmd.with_wait(5).wait == 5 and cmd.wait == 0
    with pytest.raises(ValueError, match="wait = 128"):
        cmd.with_wait(1 << WAIT_FIELD.width)


def _stream_case(config, later, earlier=Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8)):
    """``earlier`` (a LOAD) then a PRELOAD of weights, then ``later``: the wait ``order_program`` gives it."""
    commands = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                earlier, later]
    nbytes = sum(data_in_bytes(c, config) for c in commands)
    return order_program(Program(commands, bytes(nbytes)), config).commands[3].wait


def test_stream_only_where_the_reader_stays_behind_the_writer():
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    compute = lambda aaddr: Command(Opcode.COMPUTE, aaddr=aaddr, accaddr=0, rows=4)
    assert _stream_case(config, compute(0)) == Wait.STREAM
    assert _stream_case(config, compute(0), Command(Opcode.LOAD, buf=Buf.ACT, addr=2, rows=8)) == Wait.STREAM
    assert _stream_case(config, compute(1)) == Wait.LD          # starts ahead of the writer
    # An ACTIVATE that writes rows the COMPUTE still reads cannot stream behind it (a WAR, not a read).
    commands = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8), compute(0),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=2, rows=4, dest=0),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=32, rows=4, dest=0)]
    program = order_program(Program(commands, bytes(sum(data_in_bytes(c, config) for c in commands))), config)
    assert [c.wait & (Wait.EX | Wait.STREAM) for c in program.commands[4:]] == [Wait.EX, 0]
    # A STREAM that the rule does not allow is refused, naming both commands.
    bad = Program(program.commands[:3] + [compute(1).with_fields(wait=Wait.STREAM | Wait.PL)], program.data_in)
    with pytest.raises(HazardError, match=r"command 3 COMPUTE.*command 2 LOAD.*wait=<Wait.LD"):
        check_program(bad, config)


def test_pe_buffers_are_ordered_by_dispatch_order():
    """A COMPUTE needs no token for the PRELOAD before it, nor a PRELOAD for the COMPUTE that read its
    buffer once a later COMPUTE has dispatched; only the last COMPUTE holds the buffer it reads (the
    PRELOAD waits for EX), and a PRELOAD of the other buffer waits for nothing."""
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    preload = Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2)
    compute = lambda accaddr: Command(Opcode.COMPUTE, aaddr=0, accaddr=accaddr, rows=4)
    head = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=4)]

    def waits(commands):
        program = Program(head + commands, bytes(sum(data_in_bytes(c, config) for c in head + commands)))
        return [c.wait for c in order_program(program, config).commands[len(head):]]

    # (the COMPUTEs stream behind the activation LOAD)
    assert waits([preload, compute(0), preload, compute(4), preload, compute(8)]) == [0, Wait.STREAM] * 3
    assert waits([preload, compute(0), preload, preload]) == [0, Wait.STREAM, 0, Wait.EX]
    bad = Program(head + [preload, compute(0).with_wait(Wait.STREAM), preload, preload],
                  bytes(sum(data_in_bytes(c, config) for c in head)))
    with pytest.raises(HazardError, match=r"command 5 PRELOAD.*command 3 COMPUTE.*wait=<Wait.EX"):
        check_program(bad, config)


def test_bias_banks_free_once_the_next_activate_dispatches():
    """A LOAD_BIAS / LOAD_QUANT into the bank of an ACTIVATE that a later ACTIVATE followed needs no
    token (its rows were all read, each with its parameters); into the bank of the last ACTIVATE it
    waits for ACT; and a LOAD into the activation SRAM that an older ACTIVATE still writes waits for
    ACT as before (only the row reads are over)."""
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    act = lambda bank, aaddr=0: Command(Opcode.ACTIVATE, accaddr=0, aaddr=aaddr, rows=4, dest=0, bank=bank)

    def waits(commands):
        program = Program(commands, bytes(sum(data_in_bytes(c, config) for c in commands)))
        return [c.wait for c in order_program(program, config).commands]

    bias, quant = Command(Opcode.LOAD_BIAS, bank=0), Command(Opcode.LOAD_QUANT, bank=0)
    assert waits([act(0), act(1, 8), bias, quant]) == [0, 0, 0, 0]
    assert waits([act(1), act(0, 8), bias]) == [0, 0, Wait.ACT]
    assert waits([act(0), act(1, 8), Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=4)])[-1] == Wait.ACT
    bad = Program([act(1), act(0, 8), bias], bytes(data_in_bytes(bias, config)))
    with pytest.raises(HazardError, match=r"command 2 LOAD_BIAS.*command 1 ACTIVATE.*wait=<Wait.ACT"):
        check_program(bad, config)


def test_no_stream_in_the_output_stationary_dataflow():
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64, dataflow="os")
    load = Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8)
    later = Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=4, waddr=0, mrows=2, ncols=2)
    nbytes = data_in_bytes(load, config)
    program = order_program(Program([load, later], bytes(nbytes)), config)
    assert program.commands[1].wait == Wait.LD
    with pytest.raises(HazardError):
        check_program(Program([load, later.with_fields(wait=Wait.STREAM)], bytes(nbytes)), config)


def test_activate_streams_array_latency_plus_two_after_its_compute():
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=64)
    commands = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
                Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8), Command(Opcode.LOAD_BIAS, bank=0),
                Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=8),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=0, rows=8, dest=1)]
    program = order_program(Program(commands, bytes(sum(data_in_bytes(c, config) for c in commands))), config)
    assert program.commands[5].wait & (Wait.STREAM | Wait.EX) == Wait.STREAM
    npu = GoldenNpu(config)
    npu.run(program)
    assert npu.trace[5][1] == npu.trace[4][1] + stream_delay(2, 2)[Unit.EX] == npu.trace[4][1] + array_latency(2, 2) + 2


@pytest.mark.parametrize("m,k,n,order", [(4, 64, 128, "n_outer"), (4, 64, 128, "k_outer"), (40, 48, 40, "n_outer"),
                                         (3, 27, 100, "n_stream")])
def test_list_scheduler_keeps_results_and_predicts_the_cycles(m, k, n, order, monkeypatch):
    """``golden.reorder.schedule_program`` reorders a GEMM's commands without changing what it computes
    (outputs and every counter but ``cycles`` equal those of the compiler's order), its own replay of the
    timing (``advance``) gives the golden model's cycles, and it is not slower than the compiler's order."""
    from opennpu.golden import reorder
    from opennpu.golden.timing import CycleModel
    config = NpuConfig(rows=16, cols=16)
    spec = random_gemm(m, k, n, seed=2)
    with monkeypatch.context() as patch:
        patch.setattr(reorder, "LIMIT", 0)          # (the compiler's own order, only ordered)
        plain = build_gemm(config, spec, order=order, transpose=False).program
    scheduled = reorder.schedule_program(Program([c.with_wait(0) for c in plain.commands], plain.data_in), config)
    assert scheduled.commands != plain.commands
    check_program(scheduled, config)
    a, b = GoldenNpu(config).run(plain), GoldenNpu(config).run(scheduled)
    assert a.outputs == b.outputs
    assert {k: v for k, v in a.counters.items() if k not in ("cycles", "energy_fj")} == \
        {k: v for k, v in b.counters.items() if k not in ("cycles", "energy_fj")}
    assert b.counters["cycles"] <= a.counters["cycles"]
    model = CycleModel(config.rows, config.cols)
    for cmd in scheduled.commands:
        advance(model, cmd, config)
    assert model.total_cycles() == b.counters["cycles"]


@pytest.mark.parametrize("astep, aaddr, rows", [(AStep.UNIT, 10, 6), (AStep.DOUBLE, 9, 4), (AStep.HOLD, 15, 40)])
def test_compute_range_covers_the_last_word_it_reads(astep, aaddr, rows):
    """A COMPUTE is accepted exactly when its last activation word (``aaddr + (rows - 1) * step``) is in
    the SRAM; the next address up is refused (``BAD_RANGE``, before anything runs)."""
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=64)
    last = aaddr + (rows - 1) * astep.words
    assert last == config.act_depth - 1 and aaddr + act_span(astep, rows) == config.act_depth
    ok = Command(Opcode.COMPUTE, aaddr=aaddr, accaddr=0, rows=rows, astep=astep)
    assert validate(ok, config, Precision.INT8)[0] == ErrorCode.OK
    assert validate(ok.with_fields(aaddr=aaddr + 1), config, Precision.INT8)[0] == ErrorCode.BAD_RANGE
    assert validate(ok.with_fields(astep=3), config, Precision.INT8)[0] == ErrorCode.BAD_FIELD
    os = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=4, acc_depth=64, dataflow="os")
    assert validate(Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, mrows=1, ncols=1, astep=astep), os,
                    Precision.INT8)[0] == (ErrorCode.OK if astep == AStep.UNIT else ErrorCode.BAD_FIELD)
