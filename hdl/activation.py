"""Fused activation unit on the accumulator -> scratchpad path.

One lane per array column. Every lane computes, bit-exactly as ``golden.numerics.activation_unit``::

    x = wrap32(acc + bias[lane])
    y = clamp(rdbpot(srdhm(sat32(x << max(shift, 0)), multiplier), max(-shift, 0)) + out_zp, qmin, qmax)
    (single_round: the product rounded once, (sat32(x << left) * multiplier + 2^(30+e)) >> (31+e))
    y = lut[y + 128]                    # only when use_lut

Latency: ``ActivationUnit.latency_for()`` = 10 cycles (``golden.timing.ACT_LATENCY``), independent of
``use_lut``.
Throughput: one row of ``lanes`` values per cycle, back to back, no stalls.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .sram import ReplicatedMemory

__all__ = ["ActivationUnit"]

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_LUT_DEPTH = 256


class ActivationUnit(wiring.Component):
    """Bias add, gemmlowp requantization, zero point, clamp and an optional 256-entry int8 LUT.

    Pipeline (one register stage each; ``*_valid`` travels alongside, data registers load only when
    the row entering them is valid, so ``o_data`` holds the last row while ``o_valid`` is low):

    1. bias add: ``x = wrap32(acc + bias)``
    2. saturating left shift: ``x = sat32(x << max(shift, 0))``
    3. multiply + nudge: ``p = x * multiplier + 2^30``, three stages: four 16x16 partial products
       (DSP blocks), then ``hh``, ``hl + lh`` and ``ll + 2^30``, then their weighted sum. This is
       the gemmlowp ``SaturatingRoundingDoublingHighMul``: ``srdhm(x, M) == (x*M + 2^30) >> 31`` for
       every ``x``; its only saturating case (``x == M == INT32_MIN``) cannot occur because
       ``multiplier`` is unsigned 31-bit. With ``single_round`` the nudge is ``2^(30+e)`` instead
       (in ``ll`` for e <= 1, in ``hh`` above).
    4. high word and POT shift: ``h = p >> 31``, ``q = h >> e``, ``r = h[e-1] & (h >= 0 | h[0:e-1] != 0)``
       with ``e = max(-shift, 0)`` (round half away from zero; ``r = 0`` with ``single_round``, where
       ``q`` is already the once-rounded result)
    5. zero point, then clamp (two stages): ``t = q + r + out_zp``; ``y = min(max(t, qmin), qmax)``
    6. LUT read: the word holding entry ``y + 128`` (block RAM, one copy per lane)
    7. select: ``o_data = use_lut ? lut[y + 128] : y``

    The LUT holds 256 int8 entries as ``256 / lut_write_width`` words, one block-RAM copy per lane
    (a register file when ``lut_write_width >= 256``). It powers up zero and, like the SRAMs, keeps
    its contents across a reset (programs load it with ``LOAD_LUT`` before using it).

    Parameters
    ----------
    lanes : int
        Number of lanes (array columns), >= 1.
    lut_write_width : int
        LUT entries written per ``lut_we`` cycle. A power of two up to 256: entries
        ``lut_addr & ~(lut_write_width - 1)`` onwards get ``lut_wdata[0..lut_write_width-1]`` (the low
        ``log2(lut_write_width)`` bits of ``lut_addr`` are ignored). Any value >= 256: the whole table
        is loaded from ``lut_wdata[0..255]`` and ``lut_addr`` is ignored.

    Members
    -------
    i_valid : In(1)
        A row is presented on ``i_acc`` this cycle.
    i_acc : In(ArrayLayout(signed(32), lanes))
        Accumulators, one per lane.
    bias : In(ArrayLayout(signed(32), lanes))
        Per-lane bias (per output channel) of the row on ``i_acc``.
    multiplier : In(ArrayLayout(unsigned(31), lanes))
        Per-lane requantization multiplier ``M0``, 0..2^31-1, of the row on ``i_acc``.
    shift : In(ArrayLayout(signed(8), lanes))
        Per-lane requantization shift, -31..30 (positive: left shift before the multiply; negative:
        rounding right shift after it), of the row on ``i_acc``.
    out_zp, qmin, qmax : In(signed(8))
        Output zero point and clamp bounds (``qmin > qmax`` yields ``qmax``, like ``np.clip``).
    single_round : In(1)
        TFLite's single rounding instead of gemmlowp's double rounding.
    use_lut : In(1)
        Map the clamped value through the LUT.
    lut_we : In(1)
        Write ``lut_wdata`` into the LUT at the clock edge.
    lut_addr : In(range(256))
        First LUT entry written (a multiple of ``lut_write_width``).
    lut_wdata : In(ArrayLayout(signed(8), lut_write_width))
        LUT entries to write.
    o_valid : Out(1)
        ``o_data`` holds a row; high exactly ``latency`` cycles after the row's ``i_valid``.
    o_data : Out(ArrayLayout(signed(8), lanes))
        Activated int8 outputs, one per lane.

    ``bias``, ``multiplier`` and ``shift`` belong to the row presented with them (on ``i_valid``): they
    travel beside it, so rows with different parameters (other output channels, another bias bank)
    follow each other back to back. ``single_round``, ``out_zp``, ``qmin``, ``qmax``, ``use_lut`` and the
    LUT contents are read by the stages as rows pass, so the controller holds them stable (and does not
    write the LUT) while rows are in flight.

    Raises
    ------
    TypeError
        If ``lanes`` or ``lut_write_width`` is not an int.
    ValueError
        If ``lanes < 1``, or ``lut_write_width`` is neither a power of two up to 256 nor >= 256.
    """

    def __init__(self, lanes, lut_write_width):
        for name, value in (("lanes", lanes), ("lut_write_width", lut_write_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        if lut_write_width < 1 or (lut_write_width < _LUT_DEPTH and lut_write_width & (lut_write_width - 1)):
            raise ValueError(f"lut_write_width must be a power of two up to {_LUT_DEPTH} or >= {_LUT_DEPTH}, "
                             f"got {lut_write_width}")
        self._lanes = lanes
        self._lut_write_width = lut_write_width
        super().__init__({
            "i_valid":    In(1),
            "i_acc":      In(data.ArrayLayout(signed(32), lanes)),
            "bias":       In(data.ArrayLayout(signed(32), lanes)),
            "multiplier": In(data.ArrayLayout(unsigned(31), lanes)),
            "shift":      In(data.ArrayLayout(signed(8), lanes)),
            "out_zp":     In(signed(8)),
            "qmin":       In(signed(8)),
            "qmax":       In(signed(8)),
            "single_round": In(1),
            "use_lut":    In(1),
            "lut_we":     In(1),
            "lut_addr":   In(range(_LUT_DEPTH)),
            "lut_wdata":  In(data.ArrayLayout(signed(8), lut_write_width)),
            "o_valid":    Out(1),
            "o_data":     Out(data.ArrayLayout(signed(8), lanes)),
        })

    @staticmethod
    def latency_for():
        """Cycles from a row's ``i_valid`` to its ``o_valid``."""
        return 10

    @property
    def latency(self):
        return self.latency_for()

    @property
    def lanes(self):
        return self._lanes

    @property
    def lut_write_width(self):
        return self._lut_write_width

    def elaborate(self, platform):
        m = Module()

        def stage_regs(elem_shape, name):
            return Signal(data.ArrayLayout(elem_shape, self._lanes), reset_less=True, name=name)

        # Each row's requantization parameters travel beside it, each decoded where its stage needs it:
        # ``shift``'s left-shift amount and saturation bounds for stage 2, the multiplier for stage 3, the
        # right shift ``e`` on to the nudge (stage 3) and the rounding masks (stage 4). So rows with
        # different parameters follow each other back to back. (These registers load every cycle: a row
        # moves one stage a cycle, so the value beside a stage is its row's.)
        left = stage_regs(range(31), "left")
        sat_hi = stage_regs(signed(32), "sat_hi")  # x << left saturates beyond these
        sat_lo = stage_regs(signed(32), "sat_lo")
        a_mult, s_mult = stage_regs(unsigned(31), "a_mult"), stage_regs(unsigned(31), "s_mult")
        right = {name: stage_regs(range(32), f"{name}_right") for name in ("a", "s", "q", "u", "p")}
        # The product's nudge: 2^30 (double rounding), 2^(30+e) (single): low part + high part (>> 32).
        nudge_lo = stage_regs(unsigned(32), "nudge_lo")
        nudge_hi = stage_regs(unsigned(30), "nudge_hi")
        half = stage_regs(32, "half")            # one-hot bit e-1 of the rounding right shift; 0 if e == 0
        below_half = stage_regs(32, "below_half")  # bits below e-1 (unused when e == 0, where half is 0)
        rounds = Signal()                        # rdbpot rounds (double rounding)
        m.d.sync += rounds.eq(~self.single_round)
        for i in range(self._lanes):
            shift = self.shift[i]
            left_now = Mux(shift > 0, shift, 0)[:5]
            m.d.sync += [
                left[i].eq(left_now), right["a"][i].eq(Mux(shift < 0, -shift, 0)[:5]),
                sat_hi[i].eq(Const(_INT32_MAX, signed(32)) >> left_now),
                sat_lo[i].eq(Const(_INT32_MIN, signed(32)) >> left_now),
                a_mult[i].eq(self.multiplier[i]), s_mult[i].eq(a_mult[i]),
                right["s"][i].eq(right["a"][i]), right["q"][i].eq(right["s"][i]),
                right["u"][i].eq(right["q"][i]), right["p"][i].eq(right["u"][i]),
            ]
            e_q = right["s"][i]                   # (decoded into stage 3's nudge)
            m.d.sync += [
                nudge_lo[i].eq(Mux(self.single_round & (e_q != 0), Mux(e_q == 1, 1 << 31, 0), 1 << 30)),
                nudge_hi[i].eq(Mux(self.single_round, (Const(1, 33) << e_q)[2:32], 0)),
            ]
            half_p = (Const(1, 33) << right["u"][i])[1:33]     # (decoded into stage 4's masks)
            m.d.sync += [half[i].eq(half_p), below_half[i].eq(half_p - 1)]

        # 1: bias add (wraps to 32 bits).
        a_valid = Signal()
        a_x = stage_regs(signed(32), "a_x")
        m.d.sync += a_valid.eq(self.i_valid)
        with m.If(self.i_valid):
            m.d.sync += [a_x[i].eq(self.i_acc[i] + self.bias[i]) for i in range(self._lanes)]

        # 2: saturating left shift (x << left > INT32_MAX exactly when x > INT32_MAX >> left, and
        # x << left < INT32_MIN exactly when x < INT32_MIN >> left: compares beside the shifter).
        s_valid = Signal()
        s_x = stage_regs(signed(32), "s_x")
        m.d.sync += s_valid.eq(a_valid)
        with m.If(a_valid):
            for i in range(self._lanes):
                shifted = (a_x[i] << left[i])[:32].as_signed()
                m.d.sync += s_x[i].eq(Mux(a_x[i] > sat_hi[i], _INT32_MAX,
                                          Mux(a_x[i] < sat_lo[i], _INT32_MIN, shifted)))

        # 3: multiply with the srdhm nudge folded in, in three stages: four 16x16 partial products
        # (one DSP block each), two partial sums, the 64-bit total.
        q_valid = Signal()
        pp = {name: stage_regs(signed(34), f"pp_{name}") for name in ("hh", "hl", "lh", "ll")}
        m.d.sync += q_valid.eq(s_valid)
        with m.If(s_valid):
            for i in range(self._lanes):
                m_hi, m_lo = s_mult[i][16:31], s_mult[i][:16]
                x_hi, x_lo = s_x[i][16:32].as_signed(), s_x[i][:16]
                m.d.sync += [pp["hh"][i].eq(x_hi * m_hi), pp["hl"][i].eq(x_hi * m_lo),
                             pp["lh"][i].eq(x_lo * m_hi), pp["ll"][i].eq(x_lo * m_lo)]
        u_valid = Signal()
        u_hh = stage_regs(signed(32), "u_hh")
        u_mid = stage_regs(signed(34), "u_mid")
        u_lo = stage_regs(unsigned(33), "u_lo")
        m.d.sync += u_valid.eq(q_valid)
        with m.If(q_valid):
            for i in range(self._lanes):
                m.d.sync += [u_hh[i].eq(pp["hh"][i] + nudge_hi[i]), u_mid[i].eq(pp["hl"][i] + pp["lh"][i]),
                             u_lo[i].eq(pp["ll"][i][:32] + nudge_lo[i])]
        p_valid = Signal()
        p_x = stage_regs(signed(64), "p_x")
        m.d.sync += p_valid.eq(u_valid)
        with m.If(u_valid):
            m.d.sync += [p_x[i].eq((u_hh[i] << 32) + (u_mid[i] << 16) + u_lo[i]) for i in range(self._lanes)]

        # 4: take the high word, shift right by e and compute the round-half-away-from-zero bit.
        r_valid = Signal()
        r_q = stage_regs(signed(32), "r_q")
        r_round = stage_regs(unsigned(1), "r_round")
        m.d.sync += r_valid.eq(p_valid)
        with m.If(p_valid):
            for i in range(self._lanes):
                # 33 bits: a single-rounding nudge of up to 2^61 can carry p >> 31 past int32 (the
                # result, shifted right by e >= 1 then, fits again).
                high = p_x[i][31:64].as_signed()
                m.d.sync += [
                    r_q[i].eq(high >> right["p"][i]),
                    r_round[i].eq(rounds & (high & half[i]).any() & (~high[-1] | (high & below_half[i]).any())),
                ]

        # 5: round and zero point, then clamp (np.clip order: max with qmin, then min with qmax).
        t_valid = Signal()
        t_y = stage_regs(signed(33), "t_y")
        m.d.sync += t_valid.eq(r_valid)
        with m.If(r_valid):
            m.d.sync += [t_y[i].eq(r_q[i] + r_round[i] + self.out_zp) for i in range(self._lanes)]
        c_valid = Signal()
        c_y = stage_regs(signed(8), "c_y")
        m.d.sync += c_valid.eq(t_valid)
        # (The two comparisons side by side, not the second behind the first's multiplexer:
        # max(t, qmin) is qmin when t < qmin, and min(qmin, qmax) does not depend on t.)
        low = Mux(self.qmin > self.qmax, self.qmax, self.qmin)
        with m.If(t_valid):
            for i in range(self._lanes):
                m.d.sync += c_y[i].eq(Mux(t_y[i] < self.qmin, low, Mux(t_y[i] > self.qmax, self.qmax, t_y[i])))

        # 6: LUT read. The table is stored as words of ``lut_write_width`` entries (one word per
        # ``lut_we``), one block-RAM copy per lane (a synchronous read: the RAM's own register is
        # this stage's register); a write of all 256 entries at once needs a register file instead.
        w = min(self._lut_write_width, _LUT_DEPTH)
        words = _LUT_DEPTH // w
        low_bits = (w - 1).bit_length()
        l_valid, l_use, l_low = Signal(), Signal(), stage_regs(unsigned(max(1, low_bits)), "l_low")
        l_y = stage_regs(signed(8), "l_y")
        l_word = [Signal(8 * w, name=f"l_word{i}") for i in range(self._lanes)]
        index = [Cat(c_y[i][:7], ~c_y[i][7]) for i in range(self._lanes)]     # y + 128 for y in -128..127
        m.d.sync += l_valid.eq(c_valid)
        with m.If(c_valid):
            m.d.sync += [l_use.eq(self.use_lut)]
            for i in range(self._lanes):
                m.d.sync += [l_y[i].eq(c_y[i]), l_low[i].eq(index[i][:low_bits] if low_bits else 0)]
        if words > 1:
            m.submodules.lut = lut = ReplicatedMemory(width=8 * w, depth=words, read_ports=self._lanes)
            m.d.comb += [lut.wr.en.eq(self.lut_we), lut.wr.addr.eq(self.lut_addr[low_bits:]),
                         lut.wr.data.eq(self.lut_wdata.as_value()[:8 * w])]
            for i in range(self._lanes):
                port = lut.read_port(i)
                m.d.comb += [port.en.eq(c_valid), port.addr.eq(index[i][low_bits:]), l_word[i].eq(port.data)]
        else:
            table = Signal(8 * _LUT_DEPTH)
            with m.If(self.lut_we):
                m.d.sync += table.eq(self.lut_wdata.as_value()[:8 * _LUT_DEPTH])
            with m.If(c_valid):
                m.d.sync += [l_word[i].eq(table) for i in range(self._lanes)]

        # 7: select the entry (or the clamped value) into the output register.
        m.d.sync += self.o_valid.eq(l_valid)
        with m.If(l_valid):
            for i in range(self._lanes):
                entry = l_word[i].word_select(l_low[i], 8) if low_bits else l_word[i]
                m.d.sync += self.o_data[i].eq(Mux(l_use, entry, l_y[i]))

        return m
