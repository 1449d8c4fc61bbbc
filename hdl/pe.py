"""One processing element (PE) of the weight-stationary systolic array.

A PE holds two int8 weights (double buffering), multiplies the activation passing through it by the
weight its buffer tag selects, adds the product to the partial sum coming from above, and passes the
activation to the right (one register) and the partial sum down (three pipeline stages: operands,
product, sum, so that the multiply has a whole cycle in a DSP block, ``MULT18X18D`` / ``SB_MAC16``).
A second, vertical activation path (two registers a PE) carries one lane of the rows down a column:
a depthwise row (``dw``) multiplies the activation coming from above instead of the one from the left,
so that the PEs of a column hold the taps of one channel's FIR (``golden/isa.py``, ``dw``).
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Activation", "ProcessingElement"]


class Activation(data.Struct):
    """One activation lane as it travels right through a row of PEs.

    Members
    -------
    data : signed(8)
        The activation value.
    buf : unsigned(1)
        Which of the two weight buffers this activation multiplies with.
    dw : unsigned(1)
        Depthwise row: the PE multiplies its vertical input ``v_in`` instead of ``data``.
    valid : unsigned(1)
        Set when the lane carries a row; travels with it so the array knows when its result leaves.
    """
    data: signed(8)
    buf: 1
    dw: 1
    valid: 1


class ProcessingElement(wiring.Component):
    """Weight-stationary multiply-accumulate cell with two weight buffers, pipelined.

    Every cycle::

        a_out    <= a_in
        v_mid    <= v_in;  v_out <= v_mid                  # vertical path: two registers
        a_q      <= v_in if a_in.dw else a_in.data         # stage 1: operands
        w_q      <= W[a_in.buf]
        p        <= a_q * w_q                              # stage 2: product (DSP)
        psum_out <= wrap32(psum_in + p)                    # stage 3: sum

    Latency: 1 cycle from ``a_in`` to ``a_out``; 2 cycles from ``v_in`` to ``v_out`` (in the array, rows
    one cycle apart reach the PE below one cycle later, so the PE below sees, with a row, what this one
    saw with the row before it); ``LATENCY`` = 3 cycles from ``a_in`` (or ``v_in``) to the
    ``psum_out`` that includes its product, and 1 cycle from ``psum_in`` to ``psum_out``. Because every
    PE adds the same two cycles, the partial sum of a row still meets the row's product in the PE
    below: a row reaching PE(r, c) in cycle ``t + r + c`` leaves the bottom of column ``c`` in cycle
    ``t + rows + c + 1``.
    Throughput: one activation per cycle.

    Weight timing: a weight written at the clock edge that ends cycle ``t`` (``w_en`` set in cycle
    ``t``) multiplies the activations present on ``a_in`` in cycles ``t + 1`` and later;
    an activation present in cycle ``t`` still uses the old value (stage 1 samples the weight in the
    cycle the activation is present).

    Parameters
    ----------
    int4_pairs : bool
        Build the a4w4 datapath (``int4_pairs`` input); without it the input is ignored.

    Members
    -------
    a_in : In(Activation)
        Activation from the left neighbour (or the array's skew registers).
    v_in : In(signed(8))
        Vertical activation from the PE above (or the array's lane of this column); multiplied instead
        of ``a_in.data`` when ``a_in.dw`` is set, in the same cycle.
    psum_in : In(signed(32))
        Partial sum from the PE above (0 for the top row).
    w_en : In(1)
        Write ``w_data`` into weight buffer ``w_buf`` at the clock edge.
    w_buf : In(1)
        Weight buffer that ``w_en`` writes.
    w_data : In(signed(8))
        Weight value that ``w_en`` writes.
    int4_pairs : In(1)
        a4w4 mode: activation and weight bytes each hold two int4 values (low nibble first) and the
        PE adds both products, ``a.lo * w.lo + a.hi * w.hi``: two 4-bit MACs per cycle. Held stable
        while rows are in flight.
    a_out : Out(Activation)
        ``a_in`` delayed by one cycle, for the PE to the right.
    v_out : Out(signed(8))
        ``v_in`` delayed by two cycles, for the PE below.
    psum_out : Out(signed(32))
        ``psum_in`` (one cycle ago) plus the product of ``a_in`` (or ``v_in``) three cycles ago, two's
        complement wrap-around, for the PE below.
    """

    LATENCY = 3

    def __init__(self, *, int4_pairs=False):
        self._int4 = bool(int4_pairs)
        super().__init__({
            "a_in": In(Activation),
            "v_in": In(signed(8)),
            "psum_in": In(signed(32)),
            "w_en": In(1),
            "w_buf": In(1),
            "w_data": In(signed(8)),
            "int4_pairs": In(1),
            "a_out": Out(Activation),
            "v_out": Out(signed(8)),
            "psum_out": Out(signed(32)),
        })

    def elaborate(self, platform):
        m = Module()

        weights = [Signal(signed(8), name=f"weight{b}") for b in range(2)]
        for b, weight in enumerate(weights):
            with m.If(self.w_en & (self.w_buf == b)):
                m.d.sync += weight.eq(self.w_data)

        a_q = Signal(signed(8))
        w_q = Signal(signed(8))
        p = Signal(signed(16))
        v_mid = Signal(signed(8))
        m.d.sync += [
            self.a_out.eq(self.a_in),
            v_mid.eq(self.v_in),
            self.v_out.eq(v_mid),
            a_q.eq(Mux(self.a_in.dw, self.v_in, self.a_in.data)),
            w_q.eq(Mux(self.a_in.buf, weights[1], weights[0])),
            # signed 8x8 product (or two 4x4 products); the 33-bit sum truncates to int32 wrap-around.
            self.psum_out.eq(self.psum_in + p),
        ]
        product = a_q * w_q
        if self._int4:
            pair = a_q[:4].as_signed() * w_q[:4].as_signed() + a_q[4:].as_signed() * w_q[4:].as_signed()
            product = Mux(self.int4_pairs, pair, product)
        m.d.sync += p.eq(product)
        return m
