"""Output-stationary systolic array: every PE keeps one output of the tile in its accumulator.

Dataflow of a ``rows`` x ``cols`` array (``rows`` = M rows of the output tile, ``cols`` = N columns)::

                  w_data[0]     w_data[1] -> [1 reg]   ...   w_data[C-1] -> [C-1 regs]
                      |             |                              |
    a_data[0] ---> PE(0,0) -----> PE(0,1) -----> ... ------> PE(0,C-1)        activations move right,
    a_data[1] -> [1 reg] -> PE(1,0) -> ...                                     weights move down,
       ...            |             |                              |           one PE per cycle;
    a_data[R-1] -> [R-1 regs] -> PE(R-1,0) -> ...        -> PE(R-1,C-1)        outputs stay put

One K step (an activation column and a weight row) enters per cycle; PE(i, c) accumulates
``A[i, k] * W[k, c]`` over the steps of a tile and latches the sum into its result register at the
tile's last step, while the next tile already accumulates. ``drain_row`` selects which PE row's result
registers ``drain_data`` shows.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .common import delay_line

__all__ = ["OsStep", "OsProcessingElement", "OutputStationaryArray"]


class OsStep(data.Struct):
    """What travels right with an activation: the value and where the step sits in its tile.

    Members
    -------
    data : signed(8)
        Activation (a4w4: two int4 values, low nibble first).
    valid, first, last : unsigned(1)
        A step is present; it is its tile's first step (the sum restarts); its last (the sum is latched).
    """
    data: signed(8)
    valid: 1
    first: 1
    last: 1


class OsProcessingElement(wiring.Component):
    """Output-stationary multiply-accumulate cell, pipelined like the WS PE (operands, product, sum).

    Every cycle::

        a_out, w_out <= a_in, w_in
        a_q, w_q     <= a_in.data, w_in                     # stage 1: operands
        p            <= a_q * w_q                           # stage 2: product (DSP)
        acc          <= wrap32((0 if first else acc) + p)   # stage 3: sum (valid steps only)
        result       <= that same sum, on the tile's last step

    Latency: a step on ``a_in``/``w_in`` in cycle ``t`` is in ``acc`` (and, if last, ``result``) from
    cycle ``t + 3`` (``LATENCY``); ``a_out``/``w_out`` follow the inputs by one cycle.

    Members
    -------
    a_in : In(OsStep); w_in : In(signed(8))
        Activation (with the step flags) from the left, weight from above.
    int4_pairs : In(1)
        a4w4: both bytes hold two int4 values and the product is ``a.lo * w.lo + a.hi * w.hi``.
    a_out : Out(OsStep); w_out : Out(signed(8))
        The inputs one cycle later, for the neighbours.
    result : Out(signed(32))
        The sum of the last completed tile (held until the next tile's last step).
    """

    LATENCY = 3

    def __init__(self, *, int4_pairs=False):
        self._int4 = bool(int4_pairs)
        super().__init__({
            "a_in": In(OsStep), "w_in": In(signed(8)), "int4_pairs": In(1),
            "a_out": Out(OsStep), "w_out": Out(signed(8)), "result": Out(signed(32)),
        })

    def elaborate(self, platform):
        m = Module()
        a_q, w_q, p = Signal(signed(8)), Signal(signed(8)), Signal(signed(16))
        step_q, step_p = Signal(OsStep), Signal(OsStep)
        acc = Signal(signed(32))
        m.d.sync += [self.a_out.eq(self.a_in), self.w_out.eq(self.w_in),
                     a_q.eq(self.a_in.data), w_q.eq(self.w_in), step_q.eq(self.a_in), step_p.eq(step_q)]
        product = a_q * w_q
        if self._int4:
            pair = a_q[:4].as_signed() * w_q[:4].as_signed() + a_q[4:].as_signed() * w_q[4:].as_signed()
            product = Mux(self.int4_pairs, pair, product)
        m.d.sync += p.eq(product)
        total = Signal(signed(32))
        m.d.comb += total.eq(Mux(step_p.first, 0, acc) + p)
        with m.If(step_p.valid):
            m.d.sync += acc.eq(total)
            with m.If(step_p.last):
                m.d.sync += self.result.eq(total)
        return m


class OutputStationaryArray(wiring.Component):
    """Output-stationary ``rows`` x ``cols`` array of :class:`OsProcessingElement`.

    Parameters
    ----------
    rows, cols : int
        PE rows (output rows of a tile, activation lanes) and columns (output columns, weight lanes).
    int4_pairs : bool (keyword)
        Build the a4w4 datapath in every PE.

    Members
    -------
    a_valid, a_first, a_last : In(1)
        A K step is presented this cycle; it is the first / last step of its tile.
    a_data : In(ArrayLayout(signed(8), rows))
        Lane i: the step's activation for output row i.
    w_data : In(ArrayLayout(signed(8), cols))
        Lane c: the step's weight for output column c (presented with the activations).
    int4_pairs : In(1)
        a4w4 mode for every PE.
    drain_row : In(range(rows)); drain_data : Out(ArrayLayout(signed(32), cols))
        ``drain_data[c]`` is PE(``drain_row``, c)'s result register (combinational read).

    Timing: a step presented in cycle ``t`` reaches PE(i, c) in cycle ``t + i + c`` (lane i of
    ``a_data`` and lane c of ``w_data`` are skewed by i and c registers). The result of a tile whose last
    step is presented in cycle ``t`` is in PE(i, c)'s result register from cycle
    ``t + i + c + RESULT_LATENCY`` until the following tile's last step reaches it.
    """

    RESULT_LATENCY = OsProcessingElement.LATENCY

    def __init__(self, rows, cols, *, int4_pairs=True):
        self._rows, self._cols, self._int4 = rows, cols, bool(int4_pairs)
        super().__init__({
            "a_valid": In(1), "a_first": In(1), "a_last": In(1),
            "a_data": In(data.ArrayLayout(signed(8), rows)), "w_data": In(data.ArrayLayout(signed(8), cols)),
            "int4_pairs": In(1),
            "drain_row": In(range(rows)), "drain_data": Out(data.ArrayLayout(signed(32), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        pes = [[OsProcessingElement(int4_pairs=self._int4) for _ in range(cols)] for _ in range(rows)]
        for i, pe_row in enumerate(pes):
            lane = Signal(OsStep, name=f"lane{i}")
            m.d.comb += [lane.data.eq(self.a_data[i]), lane.valid.eq(self.a_valid),
                         lane.first.eq(self.a_first), lane.last.eq(self.a_last)]
            for c, pe in enumerate(pe_row):
                m.submodules[f"pe_{i}_{c}"] = pe
                m.d.comb += [
                    pe.int4_pairs.eq(self.int4_pairs),
                    pe.a_in.eq(pe_row[c - 1].a_out if c > 0 else delay_line(m, lane, i, name=f"skew_a{i}")),
                    pe.w_in.eq(pes[i - 1][c].w_out if i > 0
                               else delay_line(m, self.w_data[c], c, name=f"skew_w{c}")),
                ]
        with m.Switch(self.drain_row):
            for i in range(rows):
                with m.Case(i):
                    m.d.comb += [self.drain_data[c].eq(pes[i][c].result) for c in range(cols)]
        return m
