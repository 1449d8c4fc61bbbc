# amaranth: UnusedElaboratable=no
"""The output-stationary array on its own: back-to-back tiles of random length, results read through
the drain port at the documented times (a tile whose last step enters in cycle ``t`` is in PE(i, c)'s
result register from ``t + i + c + RESULT_LATENCY`` until the next tile's last step reaches it)."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from opennpu.golden.numerics import pack_int4, unpack_int4, wrap_int32
from opennpu.hdl.os_array import OutputStationaryArray


def _run(rows, cols, tiles, int4=False):
    """Present ``tiles`` ([(A rows x K, W K x cols)]) back to back; return each tile's drained result."""
    dut = OutputStationaryArray(rows, cols, int4_pairs=int4)
    steps = []                               # (a lanes, w lanes, first, last)
    for a, w in tiles:
        for k in range(a.shape[1]):
            steps.append((a[:, k], w[k], k == 0, k == a.shape[1] - 1))
    last_cycles = [i for i, s in enumerate(steps) if s[3]]
    results = []

    async def bench(ctx):
        ctx.set(dut.int4_pairs, int4)
        for cycle in range(len(steps) + rows + cols + dut.RESULT_LATENCY + 2):
            if cycle < len(steps):
                a, w, first, last = steps[cycle]
                ctx.set(dut.a_valid, 1)
                ctx.set(dut.a_first, first)
                ctx.set(dut.a_last, last)
                for i in range(rows):
                    ctx.set(dut.a_data[i], int(a[i]))
                for c in range(cols):
                    ctx.set(dut.w_data[c], int(w[c]))
            else:
                ctx.set(dut.a_valid, 0)
            # Drain each tile's row i when its last column is ready (the earliest legal time).
            for t, last in enumerate(last_cycles):
                i = cycle - (last + cols - 1 + dut.RESULT_LATENCY)
                if 0 <= i < rows:
                    ctx.set(dut.drain_row, i)
                    await ctx.delay(1e-9)        # let the combinational read settle
                    results.append((t, i, [ctx.get(dut.drain_data[c]) for c in range(cols)]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    out = [np.zeros((rows, cols), np.int64) for _ in tiles]
    for t, i, row in results:
        out[t][i] = row
    return out


@pytest.mark.parametrize("rows, cols", [(2, 2), (3, 4), (4, 3)])
def test_back_to_back_tiles_int8(rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = []
    for k in (cols + 2, 1 + cols, cols + 5):       # no tile shorter than the drain needs (cols - 1 steps)
        tiles.append((rng.integers(-128, 128, (rows, k)), rng.integers(-128, 128, (k, cols))))
    for (a, w), got in zip(tiles, _run(rows, cols, tiles)):
        assert np.array_equal(got, wrap_int32(a @ w))


def test_int4_pairs():
    rows, cols, k = 2, 2, 6                           # 3 steps of two int4 values each
    rng = np.random.default_rng(4)
    a, w = rng.integers(-8, 8, (rows, 2 * k)), rng.integers(-8, 8, (2 * k, cols))
    a_bytes = pack_int4(a).view(np.int8).astype(np.int64)                 # rows x k: pairs along K
    w_bytes = pack_int4(w.T).T.view(np.int8).astype(np.int64)             # k x cols: pairs along K
    assert np.array_equal(unpack_int4(pack_int4(a)), a)
    (got,) = _run(rows, cols, [(a_bytes, w_bytes)], int4=True)
    assert np.array_equal(got, a @ w)
