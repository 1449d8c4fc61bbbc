"""The dispatcher on its own (``hdl/dispatcher.py``): tokens against unit busy flags, barriers, rejection,
the checker per configured precision."""
import pytest
from amaranth.sim import Simulator

from opennpu.config import NpuConfig
from opennpu.golden.isa import Command, ErrorCode, Opcode, Precision, Wait, encode
from opennpu.hdl.decoder import checker_ops
from opennpu.golden.timing import Unit, stream_delay
from opennpu.hdl.dispatcher import Dispatcher

CONFIG = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=8, acc_depth=8, precisions=("int8", "a4w4"))
COMPUTE = Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1)
LOAD = Command(Opcode.LOAD, buf=0, addr=0, rows=1)
STORE = Command(Opcode.STORE, buf=2, addr=0, rows=1)
BUSY = ("ld", "pl", "ex_issue", "ex_drain", "ex_older", "act", "act_read", "st")


def _run(bench):
    dut = Dispatcher(CONFIG)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def testbench(ctx):
        await bench(ctx, dut)
    sim.add_testbench(testbench)
    sim.run()


def _head(ctx, dut, cmd, error=0):
    ctx.set(dut.head.valid, 1)
    ctx.set(dut.head.word, encode(cmd) if isinstance(cmd, Command) else cmd)
    ctx.set(dut.head.error, error)


def _busy(ctx, dut, **flags):
    for name in BUSY:
        ctx.set(getattr(dut.busy, name), flags.get(name, 0))


# (token, busy flags that must hold the command back, busy flags that must not)
TOKEN_CASES = [
    (Wait.LD, [dict(ld=1)], [dict(pl=1, ex_issue=1, act=1, st=1)]),
    (Wait.PL, [dict(pl=1)], [dict(ld=1, act=1)]),
    (Wait.EX, [dict(ex_issue=1), dict(ex_drain=1)], [dict(ld=1)]),
    (Wait.EX_OLDER, [dict(ex_issue=1, ex_drain=1), dict(ex_drain=1, ex_older=1)],
     [dict(ex_issue=1), dict(ex_drain=1)]),
    (Wait.ACT, [dict(act=1)], [dict(st=1)]),
    (Wait.ST, [dict(st=1)], [dict(act=1, ex_drain=1, pl=1)]),
]


@pytest.mark.parametrize("token, holding, free", TOKEN_CASES, ids=[t[0].name for t in TOKEN_CASES])
def test_a_token_waits_only_for_its_unit(token, holding, free):
    cmd, own = (LOAD, "ld") if token == Wait.ST else (STORE, "st")    # a command of another unit

    async def bench(ctx, dut):
        _head(ctx, dut, cmd.with_fields(wait=token))
        for flags in holding:
            _busy(ctx, dut, **flags)
            assert (ctx.get(getattr(dut.start, own)), ctx.get(dut.consume)) == (0, 0), flags
        for flags in free:
            _busy(ctx, dut, **{**flags, own: 0})
            assert (ctx.get(getattr(dut.start, own)), ctx.get(dut.consume)) == (1, 1), flags
    _run(bench)


def test_own_unit_and_no_token():
    async def bench(ctx, dut):
        _head(ctx, dut, COMPUTE)
        _busy(ctx, dut, ex_drain=1, ld=1, act=1)           # no tokens: only EX's issue slot matters
        assert ctx.get(dut.start.ex) == 1
        _busy(ctx, dut, ex_issue=1)
        assert ctx.get(dut.start.ex) == 0
        ctx.set(dut.ex_issue_ends, 1)                     # the issue slot frees this cycle: no gap
        assert ctx.get(dut.start.ex) == 1
        _head(ctx, dut, COMPUTE.with_fields(wait=Wait.EX))    # ... unless the COMPUTE waits for EX
        assert ctx.get(dut.start.ex) == 0
    _run(bench)


@pytest.mark.parametrize("op", [Opcode.CONFIG, Opcode.FENCE, Opcode.COUNTERS])
def test_barriers_wait_for_every_unit(op):
    async def bench(ctx, dut):
        _head(ctx, dut, Command(op))
        for name in BUSY:
            _busy(ctx, dut, **{name: 1})
            assert ctx.get(dut.consume) == 0, name
        _busy(ctx, dut)
        assert ctx.get(dut.consume) == 1
        assert ctx.get(dut.start.st) == (op == Opcode.COUNTERS)
        assert ctx.get(dut.start.config) == (op == Opcode.CONFIG)
    _run(bench)


def test_reject_is_sticky_counted_and_starts_nothing():
    async def bench(ctx, dut):
        _busy(ctx, dut, ld=1, ex_issue=1)
        _head(ctx, dut, COMPUTE, error=ErrorCode.BAD_RANGE)
        assert ctx.get(dut.consume) == 1 and ctx.get(dut.start.as_value()) == 0
        await ctx.tick()
        _head(ctx, dut, Command(Opcode.FENCE), error=ErrorCode.BAD_FIELD)
        await ctx.tick()
        assert (ctx.get(dut.error), ctx.get(dut.rejected)) == (ErrorCode.BAD_RANGE, 2)
    _run(bench)


def test_rejected_load_waits_for_ld_and_discards_its_data():
    """A rejected command that takes data-in (``golden.checks.data_in_beats``) is rejected once LD is
    free, starting LD with ``discard`` (which drops its beats); a LOAD of no SRAM takes none and goes at
    once."""
    no_sram = encode(LOAD) | 3 << 4

    async def bench(ctx, dut):
        _head(ctx, dut, LOAD, error=ErrorCode.BAD_RANGE)
        _busy(ctx, dut, ld=1)
        assert ctx.get(dut.consume) == 0
        _busy(ctx, dut)
        assert ctx.get(dut.consume) == 1
        assert (ctx.get(dut.start.ld), ctx.get(dut.start.discard)) == (1, 1)
        await ctx.tick()
        _head(ctx, dut, no_sram, error=ErrorCode.BAD_FIELD)
        _busy(ctx, dut, ld=1)
        assert ctx.get(dut.consume) == 1 and ctx.get(dut.start.as_value()) == 0
        await ctx.tick()
        assert (ctx.get(dut.error), ctx.get(dut.rejected)) == (ErrorCode.BAD_RANGE, 2)
    _run(bench)


def test_checker_per_configured_precision_and_next_head_selects():
    """A PRELOAD of 4 K rows is legal only in a4w4 on 2 rows; the code the next head gets follows the
    precision a dispatching CONFIG sets and the word's opcode (its codes as any other opcode differ)."""
    preload = encode(Command(Opcode.PRELOAD, addr=0, krows=4, ncols=2))

    async def bench(ctx, dut):
        assert len(dut.cmd_codes) == 2                    # int8, a4w4: no a8w4 checker
        ctx.set(dut.cmd_word, preload)
        codes = [ctx.get(dut.cmd_codes[i]) for i in range(2)]
        ops = checker_ops(CONFIG)
        assert [code[ops.index(Opcode.PRELOAD)] for code in codes] == [ErrorCode.BAD_FIELD, ErrorCode.OK]
        ctx.set(dut.next_word, preload)
        for i, code in enumerate(codes):
            ctx.set(dut.next_codes[i], code)
        _busy(ctx, dut)
        _head(ctx, dut, Command(Opcode.CONFIG, precision=Precision.A4W4))
        assert ctx.get(dut.next_head.error) == ErrorCode.OK
        await ctx.tick()
        assert ctx.get(dut.precision) == Precision.A4W4
        _head(ctx, dut, Command(Opcode.CONFIG, precision=Precision.INT8))
        assert ctx.get(dut.next_head.error) == ErrorCode.BAD_FIELD
        ctx.set(dut.next_word, preload & ~0xF | 0xF)    # an opcode the NPU does not implement
        assert ctx.get(dut.next_head.error) == ErrorCode.BAD_OPCODE
    _run(bench)


def test_stream_token_follows_the_last_compute_by_its_delay():
    """An ACTIVATE with ``Wait.STREAM`` dispatches ``stream_delay`` cycles after the last COMPUTE started
    (``golden.timing``); a PRELOAD with it does not wait for a busy LD (its delay is one cycle)."""
    delay = stream_delay(CONFIG.rows, CONFIG.cols)
    activate = Command(Opcode.ACTIVATE, accaddr=0, aaddr=0, rows=1, dest=1, wait=Wait.STREAM)

    async def bench(ctx, dut):
        _busy(ctx, dut)
        _head(ctx, dut, COMPUTE)
        assert ctx.get(dut.start.ex) == 1
        await ctx.tick()
        _head(ctx, dut, activate)
        for cycle in range(1, delay[Unit.EX]):
            assert ctx.get(dut.start.act) == 0, cycle
            await ctx.tick()
        assert ctx.get(dut.start.act) == 1
        _busy(ctx, dut, ld=1)
        _head(ctx, dut, Command(Opcode.PRELOAD, addr=0, krows=1, ncols=1, wait=Wait.STREAM))
        assert delay[Unit.LD] == 1 and ctx.get(dut.start.pl) == 1
    _run(bench)
