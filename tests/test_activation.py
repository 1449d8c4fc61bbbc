# amaranth: UnusedElaboratable=no
"""ActivationUnit against ``golden.numerics.activation_unit``: bit-exact outputs and o_valid timing."""
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings, strategies as st

from opennpu.golden.numerics import INT32_MAX, INT32_MIN, activation_unit, srdhm, rdbpot
from opennpu.golden.timing import ACT_LATENCY
from opennpu.hdl.activation import ActivationUnit

LANES = 4


@dataclass
class Segment:
    """Rows streamed under one parameter set; the pipeline drains before the next segment unless
    ``drain`` is False (then the next one's rows follow at once: it may change only ``bias``,
    ``multiplier`` and ``shift``, which travel with each row)."""
    rows: list                      # each a list of LANES accumulators, or None for an idle cycle
    bias: list
    multiplier: int | list          # per tensor, or one per lane (per output channel)
    shift: int | list
    out_zp: int = 0
    qmin: int = -128
    qmax: int = 127
    use_lut: bool = False
    single_round: bool = False
    lut_writes: list = field(default_factory=list)  # (lut_addr, lut_wdata) cycles before the rows
    drain: bool = True


def write_model_lut(lut, width, addr, values):
    """The documented write rule: aligned blocks of ``width`` entries, or the whole table."""
    if width >= 256:
        lut[:] = values[:256]
    else:
        base = addr // width * width
        lut[base:base + width] = values


def per_lane(value, lanes):
    return list(value) if isinstance(value, list) else [value] * lanes


def simulate(dut, segments):
    """Stream ``segments`` through ``dut``; return (expected, observed) lists of (cycle, outputs)."""
    lanes, latency = dut.lanes, dut.latency
    expected, observed = [], []
    model_lut = np.zeros(256, np.int64)

    async def driver(ctx):
        cycle = 0

        async def tick():
            nonlocal cycle
            await ctx.tick()
            cycle += 1

        for seg in segments:
            ctx.set(dut.bias, seg.bias)
            ctx.set(dut.multiplier, per_lane(seg.multiplier, lanes))
            ctx.set(dut.shift, per_lane(seg.shift, lanes))
            ctx.set(dut.out_zp, seg.out_zp)
            ctx.set(dut.qmin, seg.qmin)
            ctx.set(dut.qmax, seg.qmax)
            ctx.set(dut.use_lut, seg.use_lut)
            ctx.set(dut.single_round, seg.single_round)
            for addr, values in seg.lut_writes:
                ctx.set(dut.lut_we, 1)
                ctx.set(dut.lut_addr, addr)
                ctx.set(dut.lut_wdata, values)
                write_model_lut(model_lut, dut.lut_write_width, addr, values)
                await tick()
            ctx.set(dut.lut_we, 0)
            for row in seg.rows:
                ctx.set(dut.i_valid, row is not None)
                if row is not None:
                    ctx.set(dut.i_acc, row)
                    want = activation_unit(row, seg.bias, seg.multiplier, seg.shift, seg.out_zp, seg.qmin,
                                           seg.qmax, model_lut if seg.use_lut else None, seg.single_round)
                    expected.append((cycle + latency, [int(v) for v in want]))
                await tick()
            ctx.set(dut.i_valid, 0)
            for _ in range(latency + 1 if seg.drain else 0):   # drain with the parameters still held
                await tick()
        for _ in range(latency + 1):
            await tick()

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, data in ctx.tick().sample(dut.o_valid, dut.o_data):
            if valid:
                observed.append((cycle, [data[i] for i in range(lanes)]))
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return expected, observed


def check(dut, segments):
    expected, observed = simulate(dut, segments)
    assert [c for c, _ in observed] == [c for c, _ in expected], "o_valid timing"
    for (cycle, want), (_, got) in zip(expected, observed):
        assert got == want, f"cycle {cycle}: got {got}, want {want}"
    return expected


# -- property test -----------------------------------------------------------------------------------
INT32 = st.integers(INT32_MIN, INT32_MAX)
INT8 = st.integers(-128, 127)


def near_ties(exponents):
    """+-odd * 2^j + {-1, 0, 1} for j in ``exponents``, clipped to int32."""
    return st.builds(lambda sign, odd, j, d: int(np.clip(sign * (2 * odd + 1 << j) + d, INT32_MIN, INT32_MAX)),
                     st.sampled_from([-1, 1]), st.integers(0, 127), st.sampled_from(exponents), st.integers(-1, 1))


ACC = st.one_of(INT32, near_ties(range(31)), st.integers(-4096, 4096),
                st.sampled_from([INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1]))
MULTIPLIER = st.one_of(st.integers(0, INT32_MAX), st.builds(lambda p: 1 << p, st.integers(0, 30)),
                       st.sampled_from([0, 1, (1 << 30) + 1, INT32_MAX]))


RANDOM_BIAS = st.lists(st.one_of(INT32, st.just(0), st.integers(-1000, 1000)), min_size=LANES, max_size=LANES)


@st.composite
def segments(draw):
    """Random parameters and rows, or (tie mode) a power-of-two multiplier 2^p, shift -e and accumulators
    at the srdhm ties (odd * 2^(30-p)) and rdbpot ties (odd * 2^(29-p+e)) whose results land in int8 range."""
    qmin, qmax = draw(st.one_of(st.just((-128, 127)), st.tuples(INT8, INT8).map(sorted)))
    use_lut = draw(st.booleans())
    lut_writes = []
    if use_lut:
        table = [b - 256 if b >= 128 else b for b in draw(st.binary(min_size=256, max_size=256))]
        lut_writes = [(a, table[a:a + 16]) for a in range(0, 256, 16)]
    if draw(st.booleans()):
        p = draw(st.integers(0, 30))
        e = draw(st.integers(0, p))
        multiplier, shift, acc = 1 << p, -e, near_ties(sorted({30 - p, 30 - p + max(e - 1, 0)}))
        bias = st.just([0] * LANES)
    elif draw(st.booleans()):
        multiplier, shift, acc = draw(MULTIPLIER), draw(st.integers(-31, 30)), ACC
        bias = RANDOM_BIAS
    else:                           # per output channel: every lane its own multiplier and shift
        multiplier = draw(st.lists(MULTIPLIER, min_size=LANES, max_size=LANES))
        shift, acc = draw(st.lists(st.integers(-31, 30), min_size=LANES, max_size=LANES)), ACC
        bias = RANDOM_BIAS
    row = st.lists(acc, min_size=LANES, max_size=LANES)
    return Segment(rows=draw(st.lists(st.one_of(row, row, row, st.none()), min_size=1, max_size=64)),
                   bias=draw(bias), multiplier=multiplier, shift=shift, out_zp=draw(INT8),
                   qmin=qmin, qmax=qmax, use_lut=use_lut, single_round=draw(st.booleans()),
                   lut_writes=lut_writes)


STATIC = ("out_zp", "qmin", "qmax", "use_lut", "single_round")


@st.composite
def runs(draw):
    """Segments, some following the one before without a drain (then they keep its CONFIG fields)."""
    segs = draw(st.lists(segments(), min_size=1, max_size=4))
    for prev, seg in zip(segs, segs[1:]):
        if draw(st.booleans()):
            prev.drain = False
            seg.lut_writes = []
            for name in STATIC:
                setattr(seg, name, getattr(prev, name))
    return segs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(runs())
def test_matches_golden(segs):
    check(ActivationUnit(LANES, 16), segs)


def test_parameters_travel_with_each_row():
    """Every row its own bias, multiplier and shift, back to back: each stage uses its own row's (a
    parameter read one stage early or late changes these results)."""
    rng = np.random.default_rng(7)
    for single in (False, True):
        check(ActivationUnit(LANES, 16), [
            Segment([list(rng.integers(-50000, 50000, LANES))], list(rng.integers(-3000, 3000, LANES)),
                    [int(v) for v in rng.integers(1 << 29, 1 << 31, LANES)],
                    [int(v) for v in rng.integers(-12, 3, LANES)], single_round=single, drain=False)
            for _ in range(24)])


# -- directed tests ------------------------------------------------------------------------------------
def rows_of(values, lanes=LANES):
    values = list(values)
    values += [0] * (-len(values) % lanes)
    return [values[i:i + lanes] for i in range(0, len(values), lanes)]


def test_rounding_ties():
    # multiplier 2^30 halves exactly (srdhm(2h, 2^30) == h), so rdbpot(h, e) sees every tie of both signs.
    halves = [2 * h for h in range(-300, 301)]
    assert all(srdhm(a, 1 << 30) == a // 2 for a in halves)
    segs = [Segment(rows_of(halves), [0] * LANES, 1 << 30, shift) for shift in (-1, -2, -3)]
    # multiplier 2^p: srdhm ties where acc * 2^p == +-2^30 mod 2^31, i.e. acc = odd * 2^(30-p), +-1.
    for p in (0, 12, 24, 29):
        accs = [(k << (30 - p)) + d for k in range(-129, 130) for d in (-1, 0, 1)
                if INT32_MIN <= (k << (30 - p)) + d <= INT32_MAX]
        segs.append(Segment(rows_of(accs), [0] * LANES, 1 << p, 0))
    check(ActivationUnit(LANES, 1), segs)
    # The golden model breaks positive ties up and negative ties (of srdhm) toward zero, rdbpot away from zero.
    assert srdhm(-(1 << 30), 1) == 0 and srdhm(1 << 30, 1) == 1
    assert rdbpot(-3, 1) == -2 and rdbpot(3, 1) == 2


def test_single_rounding_ties():
    """TFLite's single rounding: the exact product rounded once, half up (not away from zero), at
    every shift including the e = 0, 1 and >= 2 placements of the nudge."""
    halves = [2 * h + d for h in range(-300, 301) for d in (0, 1)]
    segs = [Segment(rows_of(halves), [0] * LANES, 1 << 30, shift, single_round=True)
            for shift in (0, -1, -2, -3, -17, -31, 3)]
    check(ActivationUnit(LANES, 1), segs)
    # -2 * 2^30 / 2^31 / 2 = -0.5: single rounding goes up to 0, double rounding away from zero to -1.
    assert list(activation_unit([-2, 2], 0, 1 << 30, -1, 0, -128, 127, single_round=True)) == [0, 1]
    assert list(activation_unit([-2, 2], 0, 1 << 30, -1, 0, -128, 127)) == [-1, 1]
    # The largest product with the largest nudge (e = 31): p >> 31 exceeds int32 before the last shift.
    big = [INT32_MAX, INT32_MIN, INT32_MAX - 1, -1]
    check(ActivationUnit(LANES, 1), [Segment([big], [0] * LANES, INT32_MAX, shift, single_round=True)
                                     for shift in (-31, -30, -1, 0)])


def test_edge_cases():
    m_max = INT32_MAX
    # Each row is (acc, bias, expected y): INT32_MIN/INT32_MAX through the largest multiplier.
    big = [(INT32_MIN, 0, -128), (INT32_MAX, 0, 127), (INT32_MIN + 1, 0, -128), (INT32_MAX, 1, -128)]
    # shift = 30 with multiplier 100 (y ~ 100 * x / 2^31): saturating, not wrapping, left shift.
    sat = [(1, 0, 50), (2, 0, 100), (-2, 0, -100), (-3, 0, -100), (INT32_MAX, 0, 100), (INT32_MIN, 0, -100),
           (3, 0, 100), (INT32_MAX, 2, -100)]          # last: bias wraps to INT32_MIN + 1, then saturates
    cases = [(big, m_max, -24, -128, 127), (sat, 100, 30, -128, 127)]
    # INT32_MIN * (2^31 - 1) at shift -31: rdbpot(-2^31 + 1, 31) == -1 (just past the tie).
    cases.append(([(INT32_MIN, 0, -1), (INT32_MAX, 0, 1), (-(1 << 30), 0, 0), (1 << 30, 0, 1)], m_max, -31,
                  -128, 127))
    for lanes in (1, 3):
        dut = ActivationUnit(lanes, 1)
        segs = []
        for triples, multiplier, shift, qmin, qmax in cases:
            for start in range(0, len(triples), lanes):
                chunk = triples[start:start + lanes]
                chunk += [(0, 0, 0)] * (lanes - len(chunk))
                acc, bias, want = (list(t) for t in zip(*chunk))
                assert list(activation_unit(acc, bias, multiplier, shift, 0, qmin, qmax)) == want
                segs.append(Segment([acc, acc], bias, multiplier, shift, 0, qmin, qmax))
        check(dut, segs)


@pytest.mark.parametrize("width", [1, 8, 256, 300])
def test_lut_write_widths(width):
    lanes = 8
    rng = np.random.default_rng(width)
    ys = rows_of([2 * y for y in range(-128, 128)], lanes)     # M = 2^30, shift 0: y == acc / 2
    common = dict(bias=[0] * lanes, multiplier=1 << 30, shift=0, use_lut=True)
    table = [int(v) for v in rng.integers(-128, 128, max(width, 256))]
    if width >= 256:
        full = [(0, table)]
        patch = [(0, [int(v) for v in rng.integers(-128, 128, width)])]
    else:
        full = [(a, table[a:a + width]) for a in range(0, 256, width)]
        patch = [(3 * width, [int(v) for v in rng.integers(-128, 128, width)])]
    expected = check(ActivationUnit(lanes, width), [
        Segment(ys[:2], **common),                                   # reset content: zeros
        Segment(ys, lut_writes=full, **common),
        Segment(ys, lut_writes=patch, **common),
        Segment(ys, **dict(common, use_lut=False)),
    ])
    assert all(v == 0 for _, row in expected[:2] for v in row)
    assert [v for _, row in expected[2:2 + len(ys)] for v in row] == table[:256]


def test_clamp_zero_point():
    accs = rows_of([2 * y for y in range(-200, 200, 7)])
    segs = [Segment(accs, [0] * LANES, 1 << 30, 0, zp, qmin, qmax)
            for zp, qmin, qmax in ((0, -128, 127), (-20, -5, 90), (100, 0, 127), (-128, -128, -128), (5, 10, -10))]
    check(ActivationUnit(LANES, 4), segs)


def test_latency_and_parameters():
    dut = ActivationUnit(3, 2)
    assert dut.latency == ActivationUnit.latency_for() == ACT_LATENCY == 10
    assert (dut.lanes, dut.lut_write_width) == (3, 2)
    expected = check(dut, [Segment([[2, -4, 6]], [0] * 3, 1 << 30, 0)])
    assert expected == [(10, [1, -2, 3])]           # one row in at cycle 0, out at cycle 10


@pytest.mark.parametrize("args, exc", [
    ((0, 1), ValueError), ((4, 0), ValueError), ((4, 3), ValueError), ((4, 96), ValueError),
    ((4.0, 1), TypeError), ((4, True), TypeError),
])
def test_bad_arguments(args, exc):
    with pytest.raises(exc, match=r"lanes|lut_write_width"):
        ActivationUnit(*args)


@pytest.mark.parametrize("width", [2, 512])
def test_verilog_conversion(width):
    dut = ActivationUnit(2, width)
    text = verilog.convert(dut, name="activation_unit", ports=None)
    assert "module activation_unit" in text
