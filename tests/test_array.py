# amaranth: UnusedElaboratable=no
"""Tests of the processing element and the weight-stationary systolic array.

The array is checked cycle by cycle against a small reference model of its documented timing: a row
presented in cycle ``t`` reaches PE(r, c) in cycle ``t + r + c`` and, since weight writes are skewed by
column the same way, sees the weights of PE row ``r`` written (presented) before cycle ``t + r``; its
result appears exactly ``latency`` cycles later. A depthwise row (``a_dw``) presented in cycle ``t`` takes,
in PE(r, c), lane ``c`` of the row presented in cycle ``t - r`` instead of its own lane ``r``.
"""
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from opennpu.golden.numerics import INT32_MAX, INT32_MIN, wrap_int32
from opennpu.hdl.array import SystolicArray
from opennpu.hdl.pe import ProcessingElement


# -- stimulus and reference model --------------------------------------------------------------------
class Schedule:
    """Inputs of the array, cycle by cycle (cycles with nothing set drive all enables low)."""

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        self.rows_in = {}       # cycle -> (activation vector, buf, dw)
        self.writes = {}        # cycle -> (row, buf, weight vector)

    @property
    def length(self):
        return 1 + max([*self.rows_in, *self.writes, -1]) + self.cols

    def present(self, cycle, a, buf, dw=False):
        """A row in ``cycle``; a depthwise one (``dw``) needs rows presented in the ``rows - 1`` cycles
        before it (the reference model knows no others)."""
        assert cycle not in self.rows_in
        self.rows_in[cycle] = (np.asarray(a, np.int64), buf, bool(dw))

    def write(self, cycle, row, buf, w):
        assert cycle not in self.writes
        self.writes[cycle] = (row, buf, np.asarray(w, np.int64))

    def load(self, cycle, buf, matrix):
        """Write ``matrix`` (rows x cols) into buffer ``buf``, PE row r in cycle ``cycle + r``."""
        for r in range(self.rows):
            self.write(cycle + r, r, buf, matrix[r])


def reference(schedule, cycles):
    """Expected ``{cycle: out_data}`` for every cycle in which ``out_valid`` must be 1."""
    rows, cols = schedule.rows, schedule.cols
    weights = np.zeros((2, rows, cols), np.int64)
    seen = []                  # seen[k]: weight buffers after the writes presented before cycle k
    for k in range(cycles):
        seen.append(weights.copy())
        if k in schedule.writes:
            row, buf, w = schedule.writes[k]
            weights[buf, row] = w
    latency = SystolicArray.latency_for(rows, cols)
    expected = {}
    for t, (a, buf, dw) in schedule.rows_in.items():
        if dw:        # PE(r, c): lane c of the row of t - r; columns beyond the lanes see 0
            out = [sum(int(schedule.rows_in[t - r][0][c]) * int(seen[t + r][buf, r, c]) for r in range(rows))
                   if c < rows else 0 for c in range(cols)]
        else:
            out = [sum(int(a[r]) * int(seen[t + r][buf, r, c]) for r in range(rows)) for c in range(cols)]
        expected[t + latency] = wrap_int32(out)
    return expected


def simulate(schedule):
    """Run ``schedule`` on a SystolicArray; return ``[(out_valid, out_data)]`` for every cycle.

    Inputs that no enable qualifies are driven with random values, so a design that looks at them
    fails.
    """
    rows, cols = schedule.rows, schedule.cols
    dut = SystolicArray(rows, cols)
    cycles = schedule.length + dut.latency + 2
    rng = np.random.default_rng(0)
    trace = []

    async def testbench(ctx):
        for k in range(cycles):
            a, a_buf, a_dw = schedule.rows_in.get(k, (rng.integers(-128, 128, rows), rng.integers(2),
                                                      rng.integers(2)))
            ctx.set(dut.a_valid, k in schedule.rows_in)
            ctx.set(dut.a_data, [int(x) for x in a])
            ctx.set(dut.a_buf, int(a_buf))
            ctx.set(dut.a_dw, int(a_dw))
            w_row, w_buf, w = schedule.writes.get(k, (rng.integers(rows), rng.integers(2),
                                                      rng.integers(-128, 128, cols)))
            ctx.set(dut.w_en, k in schedule.writes)
            ctx.set(dut.w_row, int(w_row))
            ctx.set(dut.w_buf, int(w_buf))
            ctx.set(dut.w_data, [int(x) for x in w])
            trace.append((ctx.get(dut.out_valid), [ctx.get(dut.out_data[c]) for c in range(cols)]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return trace


def check(schedule):
    """Simulate ``schedule`` and compare every cycle's outputs with the reference model."""
    trace = simulate(schedule)
    expected = reference(schedule, len(trace) + schedule.rows + schedule.cols)
    assert len(expected) == len(schedule.rows_in)
    for k, (valid, out) in enumerate(trace):
        assert valid == (k in expected), f"out_valid={valid} in cycle {k}"
        if valid:
            assert out == list(expected[k]), f"out_data in cycle {k}"
    return expected


def random_matrix(rng, rows, cols):
    return rng.integers(-128, 128, (rows, cols))


# -- processing element --------------------------------------------------------------------------------
def test_pe_multiply_accumulate_wraps_to_int32():
    """The PE adds ``a * W[buf]`` to ``psum_in`` with int32 wrap-around: the product of the activation
    presented in cycle ``k`` meets the ``psum_in`` of cycle ``k + 2`` (``LATENCY`` = 3 stages)."""
    dut = ProcessingElement()
    assert ProcessingElement.LATENCY == 3
    cases = [  # (psum_in, a, buf): W = (127, -128)
        (5, -3, 0),
        (5, -3, 1),
        (INT32_MAX - 100, 127, 0),       # wraps past INT32_MAX
        (INT32_MIN + 100, 127, 1),       # wraps past INT32_MIN
        (INT32_MIN, -128, 1),            # -128 * -128 = 16384, no wrap
    ]
    weights = (127, -128)
    got, passed = [], []

    async def testbench(ctx):
        for buf, w in enumerate(weights):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_buf, buf)
            ctx.set(dut.w_data, w)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        for k in range(len(cases) + 2):
            if k < len(cases):
                _, a, buf = cases[k]
                ctx.set(dut.a_in, {"data": a, "buf": buf, "dw": 0, "valid": 1})
            if k >= 2:
                ctx.set(dut.psum_in, cases[k - 2][0])
            await ctx.tick()
            if k < len(cases):
                passed.append((ctx.get(dut.a_out.data), ctx.get(dut.a_out.buf)))
            if k >= 2:
                got.append(ctx.get(dut.psum_out))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert passed == [(a, buf) for _, a, buf in cases]
    got = [(g, a, buf) for g, (_, a, buf) in zip(got, cases)]
    expected = [(int(wrap_int32(psum + a * weights[buf])), a, buf) for psum, a, buf in cases]
    assert got == expected
    assert expected[2][0] < 0 and expected[3][0] > 0      # the wrap cases really wrap


def test_pe_vertical_path_and_depthwise_operand():
    """``v_out`` is ``v_in`` two cycles late; an activation with ``dw`` multiplies the ``v_in`` of its
    own cycle instead of its data (the product reaches ``psum_out`` ``LATENCY`` cycles later)."""
    dut = ProcessingElement()
    rng = np.random.default_rng(4)
    n = 12
    data, vert, dw = rng.integers(-128, 128, n), rng.integers(-128, 128, n), rng.integers(0, 2, n)
    weight = -77
    v_got, p_got = [], []

    async def testbench(ctx):
        ctx.set(dut.w_en, 1)
        ctx.set(dut.w_data, weight)
        await ctx.tick()
        ctx.set(dut.w_en, 0)
        for k in range(n + ProcessingElement.LATENCY):
            if k < n:
                ctx.set(dut.a_in, {"data": int(data[k]), "buf": 0, "dw": int(dw[k]), "valid": 1})
                ctx.set(dut.v_in, int(vert[k]))
            await ctx.tick()
            v_got.append(ctx.get(dut.v_out))
            p_got.append(ctx.get(dut.psum_out))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert v_got[1:n + 1] == list(vert)          # (after the edge ending cycle k + 1: v_in of cycle k)
    operand = np.where(dw == 1, vert, data)
    assert p_got[ProcessingElement.LATENCY - 1:][:n] == list(operand * weight)


# -- systolic array ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 2), (4, 4)])
def test_random_rows_both_buffers(rows, cols):
    """Random weights in both buffers, rows with random buffer tags: back-to-back, then with bubbles."""
    rng = np.random.default_rng(rows * 10 + cols)
    weights = [random_matrix(rng, rows, cols) for _ in range(2)]
    s = Schedule(rows, cols)
    s.load(0, 0, weights[0])
    s.load(rows, 1, weights[1])
    start = 2 * rows
    n = 48
    valid = np.concatenate([np.ones(n // 2, bool), rng.random(n // 2) < 0.5])
    acts = rng.integers(-128, 128, (n, rows))
    bufs = rng.integers(0, 2, n)
    for i in np.flatnonzero(valid):
        s.present(start + i, acts[i], bufs[i])

    expected = check(s)

    # Independent of the timing model: the weights were static, so this is a plain matmul per row.
    latency = SystolicArray.latency_for(rows, cols)
    for i in np.flatnonzero(valid):
        assert list(expected[start + i + latency]) == list(wrap_int32(acts[i] @ weights[bufs[i]]))


def test_latency():
    assert SystolicArray.latency_for(4, 4) == 9         # skew 3 + walk 3 + PE pipeline 3
    assert SystolicArray.latency_for(3, 2) == 6
    assert SystolicArray.latency_for(1, 1) == 3
    assert SystolicArray(3, 2).latency == SystolicArray.latency_for(3, 2)


def test_double_buffering_under_overlap():
    """Buffer 1 is rewritten while rows using buffer 0 flow; rows using buffer 1 follow at once.

    Buffer 1 holds stale weights before, so a row that used any of them would be wrong. Row r of the
    new weights is written in cycle ``s + r`` and rows using them start in cycle ``s + 1``, the
    earliest the documented timing allows; the writes go on while those rows flow.
    """
    rows, cols = 4, 3
    rng = np.random.default_rng(7)
    w0, w1_stale, w1 = (random_matrix(rng, rows, cols) for _ in range(3))
    s = Schedule(rows, cols)
    s.load(0, 0, w0)
    s.load(rows, 1, w1_stale)
    start = 2 * rows
    n0, n1 = 8, 8
    acts = rng.integers(-128, 128, (n0 + n1, rows))
    for i in range(n0 + n1):
        s.present(start + i, acts[i], int(i >= n0))
    s.load(start + n0 - 1, 1, w1)

    expected = check(s)

    latency = SystolicArray.latency_for(rows, cols)
    for i in range(n0 + n1):
        assert list(expected[start + i + latency]) == list(wrap_int32(acts[i] @ (w1 if i >= n0 else w0)))


def test_weight_write_boundary():
    """A row sees the new weights of PE row r iff it is presented after cycle ``t - r``, where ``t`` is the
    cycle that write was presented, in every column (the writes are skewed like the rows).

    Rows using buffer 1 are presented every cycle while buffer 1 is rewritten, PE row r in cycle
    ``s + r``: the row presented in cycle ``s + d`` sees the whole new tile iff ``d >= 1``, the old one
    otherwise, however far right the PE.
    """
    rows, cols = 3, 4
    rng = np.random.default_rng(11)
    w_old, w_new = random_matrix(rng, rows, cols), random_matrix(rng, rows, cols)
    s = Schedule(rows, cols)
    s.load(0, 1, w_old)
    write = rows + cols
    s.load(write, 1, w_new)
    offsets = range(-cols, 3)
    acts = rng.integers(-128, 128, (len(offsets), rows))
    for d, a in zip(offsets, acts):
        s.present(write + d, a, 1)

    expected = check(s)

    latency = SystolicArray.latency_for(rows, cols)
    for d, a in zip(offsets, acts):
        seen = w_new if d >= 1 else w_old
        assert list(expected[write + d + latency]) == list(wrap_int32(a @ seen)), f"offset {d}"


def test_one_buffer_rewritten_behind_its_last_row():
    """The wavefront: a buffer may be rewritten right behind the last row that uses it, and rows using
    the new tile follow at once, so back-to-back tiles need no second buffer and no drain. Rows of tile
    ``i`` are presented in cycles ``p_i - n + 1 .. p_i``, the next tile's PE row r in ``p_i + r``."""
    rows, cols = 4, 5
    rng = np.random.default_rng(5)
    tiles = [random_matrix(rng, rows, cols) for _ in range(4)]
    s = Schedule(rows, cols)
    s.load(0, 0, tiles[0])
    n, start, presented = rows, rows, []          # (one PE row written a cycle: a tile per rows cycles)
    for i, tile in enumerate(tiles):
        first = start + i * n
        for j in range(n):
            a = rng.integers(-128, 128, rows)
            s.present(first + j, a, 0)
            presented.append((first + j, a, tile))
        if i + 1 < len(tiles):
            s.load(first + n - 1, 0, tiles[i + 1])

    expected = check(s)

    latency = SystolicArray.latency_for(rows, cols)
    for t, a, tile in presented:
        assert list(expected[t + latency]) == list(wrap_int32(a @ tile)), f"row presented in {t}"


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 2), (1, 1)])
def test_converts_to_verilog(rows, cols):
    text = verilog.convert(SystolicArray(rows, cols), name="systolic_array")
    assert "module systolic_array" in text


@pytest.mark.parametrize("rows,cols,error", [(0, 4, ValueError), (4, -1, ValueError),
                                             (4.0, 4, TypeError), (4, True, TypeError)])
def test_rejects_bad_shape(rows, cols, error):
    with pytest.raises(error, match="rows|cols"):
        SystolicArray(rows, cols)


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5), (4, 2)])
def test_depthwise_rows_are_a_fir_per_column(rows, cols):
    """Back-to-back rows, depthwise or not at random (each buffer's tile static): a depthwise row's
    column c is the R-tap FIR ``sum_r x[t - r][c] * W[r][c]`` over lane c of the rows before it, whatever
    those were; columns beyond the lanes give 0; plain rows in between stay matrix products."""
    rng = np.random.default_rng(rows * 10 + cols)
    weights = [random_matrix(rng, rows, cols) for _ in range(2)]
    s = Schedule(rows, cols)
    s.load(0, 0, weights[0])
    s.load(rows, 1, weights[1])
    start, n = 2 * rows, 40
    acts = rng.integers(-128, 128, (n, rows))
    dw = np.concatenate([np.zeros(rows - 1, bool), rng.random(n - rows + 1) < 0.7])
    dw[rows - 1:rows + 7] = True                  # (a run of depthwise rows, then a mix)
    bufs = rng.integers(0, 2, n)
    for i in range(n):
        s.present(start + i, acts[i], bufs[i], dw[i])

    expected = check(s)

    latency, lanes = SystolicArray.latency_for(rows, cols), min(rows, cols)
    padded = np.concatenate([np.zeros((rows - 1, rows), np.int64), acts])
    for i in range(n):
        got = np.array(expected[start + i + latency])
        w = weights[bufs[i]]
        if dw[i]:
            for c in range(lanes):         # np.convolve: y[i] = sum_r x[i - r] * h[r]
                assert got[c] == np.convolve(padded[:, c], w[:, c])[i + rows - 1], (i, c)
            assert not got[lanes:].any()
        else:
            assert list(got) == list(wrap_int32(acts[i] @ w))


def test_depthwise_rows_follow_a_weight_rewrite():
    """A tile rewritten right behind the last depthwise row that uses it: depthwise rows see PE row r's
    new weights exactly when plain rows would (the row's own ``buf`` and cycle decide, not the earlier
    rows' lanes it multiplies)."""
    rows, cols = 4, 3
    rng = np.random.default_rng(9)
    w_old, w_new = random_matrix(rng, rows, cols), random_matrix(rng, rows, cols)
    s = Schedule(rows, cols)
    s.load(0, 0, w_old)
    start, n = rows, 20
    for i in range(n):
        s.present(start + i, rng.integers(-128, 128, rows), 0, i >= rows - 1)
    s.load(start + n // 2, 0, w_new)
    check(s)
