"""Weight-stationary systolic array of :class:`~opennpu.hdl.pe.ProcessingElement` cells.

Dataflow of a ``rows`` x ``cols`` array (``rows`` = K depth, ``cols`` = N width)::

    a_data[0] ---------------> PE(0,0) -> PE(0,1) -> ... -> PE(0,C-1)
    a_data[1] -> [1 reg]  ---> PE(1,0) -> PE(1,1) -> ... -> PE(1,C-1)       activations move right,
       ...                        |          |                  |           partial sums move down,
    a_data[R-1] -> [R-1 regs] -> PE(R-1,0) -> ...        -> PE(R-1,C-1)     one PE per cycle
                                  |          |                  |
                           [C-1 regs] [C-2 regs]   ...      [0 regs]        de-skew
                                  |          |                  |
                             out_data[0] out_data[1]  ...  out_data[C-1]

Depthwise rows (``a_dw``) also send lane ``c`` down column ``c`` (two registers a PE): each PE of the
column multiplies that lane of an earlier row instead of its own lane, an R-tap FIR per column.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .common import delay_line
from .pe import ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """Weight-stationary ``rows`` x ``cols`` systolic array computing one row-vector x matrix per cycle.

    Each PE(r, c) holds two int8 weights ``W[0][r][c]`` and ``W[1][r][c]`` (double buffering: the
    controller loads one buffer while rows that use the other are still flowing through the array).
    An activation row enters unskewed; lane ``r`` is delayed ``r`` cycles before PE(r, 0), then moves
    right one PE per cycle with its buffer tag and valid bit. Partial sums (int32, wrap-around) move
    down one PE per cycle; column ``c``'s bottom output is delayed ``cols - 1 - c`` cycles so that a
    whole result row leaves at once. Weight writes are skewed like the activations: column ``c`` of a
    write reaches its PE ``c`` cycles late, so a new weight tile follows the last row of the old one
    through the array as a wavefront and no PE needs to wait for the whole array to drain.

    Depthwise rows (``a_dw`` = 1; ``golden/isa.py``, ``dw``): PE(r, c) multiplies lane ``c`` of the row
    presented ``r`` cycles earlier instead of lane ``r`` of its own row, so column ``c`` (for ``c < rows``;
    0 for the others) gives ``out_data[c] = wrap32(sum_r a_data(t - r)[c] * W[a_buf][r][c])`` for the row
    presented in cycle ``t``, ``a_data(t - r)`` being the row presented in cycle ``t - r`` (whatever it
    was: a row is presented, valid or not, every cycle). Lane ``c`` leaves the skew registers towards
    PE(c, 0) in cycle ``t + c``, when the row of ``t`` reaches PE(0, c), and goes down the column two
    registers a PE (``ProcessingElement.v_in``): in cycle ``t + r + c``, when the row of ``t`` reaches
    PE(r, c), it brings lane ``c`` of the row of ``t - r``. The weight buffer is still the row's own
    (``a_buf``), so weight writes follow depthwise rows exactly as they follow the others.

    Parameters
    ----------
    rows : int
        Number of PE rows: the K depth of a weight tile and the number of activation lanes.
    cols : int
        Number of PE columns: the N width of a weight tile and the number of output lanes.

    Members
    -------
    a_valid : In(1)
        ``a_data`` carries an activation row this cycle.
    a_data : In(ArrayLayout(signed(8), rows))
        Activation row, all lanes in the same cycle; lane ``r`` feeds PE row ``r``.
    a_buf : In(1)
        Weight buffer this row multiplies with.
    a_dw : In(1)
        Depthwise row (see above): each column multiplies its own lane of this row and the rows before.
    w_en : In(1)
        Write ``w_data[c]`` into weight buffer ``w_buf`` of PE(``w_row``, c) for every column ``c``
        (column ``c`` at the clock edge ``c`` cycles later, see *Timing*).
    w_row : In(range(rows))
        PE row that ``w_en`` writes.
    w_buf : In(1)
        Weight buffer that ``w_en`` writes.
    w_data : In(ArrayLayout(signed(8), cols))
        One weight per column.
    int4_pairs : In(1)
        a4w4 mode for every PE (see ``ProcessingElement``): lane bytes and weight bytes hold two int4
        values, so one row carries ``2 * rows`` K values.
    out_valid : Out(1)
        ``out_data`` carries the result of a row presented ``latency`` cycles ago.
    out_data : Out(ArrayLayout(signed(32), cols))
        ``out_data[c] = wrap32(sum_r a_data[r] * W[a_buf][r][c])`` (a depthwise row: see above), where
        each ``W[a_buf][r][c]`` is the content of that PE's buffer in the cycle the row reaches it (see
        *Timing*).

    Timing
    ------
    All ports belong to the ``sync`` domain. The inputs are not registered first: a row presented
    (``a_valid`` = 1) in cycle ``t`` reaches PE(r, c) in cycle ``t + r + c`` (lane 0 feeds PE(0, 0)
    combinationally in cycle ``t``). All outputs come straight from registers.

    A weight write presented in cycle ``t`` (``w_en``, ``w_row`` = r) writes PE(r, c) at the clock edge
    ending cycle ``t + c``; a row reaching that PE in cycle ``t + c + 1`` or later uses the new value,
    one reaching it earlier the old one. Since a row presented in cycle ``s`` reaches PE(r, c) in
    ``s + r + c``, the column drops out: the row uses the new weights of PE row ``r`` (in every column)
    exactly when ``s + r > t``. So when buffer ``b``'s PE row ``r`` is written in cycle ``p + r``, rows
    presented up to cycle ``p`` see the old tile and rows from ``p + 1`` the new one.

    Latency: ``rows + cols + 1`` cycles (:meth:`latency_for`, = ``golden.timing.array_latency``) from
    ``a_valid`` to the matching ``out_valid``/``out_data``: the row reaches PE(rows-1, cols-1) in cycle
    ``t + rows + cols - 2`` and its result leaves that PE's 3-stage pipeline
    (``ProcessingElement.LATENCY``) three cycles later.

    Throughput: one row per cycle; back-to-back rows may each use a different buffer.

    Raises
    ------
    TypeError
        If ``rows`` or ``cols`` is not an integer.
    ValueError
        If ``rows`` or ``cols`` is less than 1.

    Parameters (keyword)
    --------------------
    int4_pairs : bool
        Build the a4w4 datapath in every PE (leave it out when the configuration has no a4w4: it
        costs a mux and two small multipliers per PE).
    """

    def __init__(self, rows, cols, *, int4_pairs=True):
        self._int4 = bool(int4_pairs)
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        self._rows = rows
        self._cols = cols
        super().__init__({
            "a_valid": In(1),
            "a_data": In(data.ArrayLayout(signed(8), rows)),
            "a_buf": In(1),
            "a_dw": In(1),
            "w_en": In(1),
            "w_row": In(range(rows)),
            "w_buf": In(1),
            "w_data": In(data.ArrayLayout(signed(8), cols)),
            "int4_pairs": In(1),
            "out_valid": Out(1),
            "out_data": Out(data.ArrayLayout(signed(32), cols)),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @staticmethod
    def latency_for(rows, cols):
        """Cycles from ``a_valid`` to the matching ``out_valid`` of a ``rows`` x ``cols`` array."""
        return rows + cols - 2 + ProcessingElement.LATENCY

    @property
    def latency(self):
        """Cycles from ``a_valid`` to the matching ``out_valid``: ``rows + cols + 1``."""
        return self.latency_for(self._rows, self._cols)

    def elaborate(self, platform):
        m = Module()

        pes = [[ProcessingElement(int4_pairs=self._int4) for _ in range(self._cols)] for _ in range(self._rows)]
        # Weight-write skew: column c's write (enable, PE row, buffer; its weight) is c cycles late.
        write = Signal(data.StructLayout({"en": 1, "row": range(self._rows), "buf": 1}), name="w_write")
        m.d.comb += [write.en.eq(self.w_en), write.row.eq(self.w_row), write.buf.eq(self.w_buf)]
        writes, weights = [], []
        for c in range(self._cols):
            writes.append(write if c == 0 else delay_line(m, writes[-1], 1, name=f"w_write{c}"))
            weights.append(delay_line(m, self.w_data[c], c, name=f"w_skew{c}"))
        for r, pe_row in enumerate(pes):
            for c, pe in enumerate(pe_row):
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.w_en.eq(writes[c].en & (writes[c].row == r)),
                    pe.w_buf.eq(writes[c].buf),
                    pe.w_data.eq(weights[c]),
                    pe.int4_pairs.eq(self.int4_pairs),
                    pe.psum_in.eq(pes[r - 1][c].psum_out if r > 0 else 0),
                ]
                if c > 0:
                    m.d.comb += pe.a_in.eq(pe_row[c - 1].a_out)
                if r > 0:
                    m.d.comb += pe.v_in.eq(pes[r - 1][c].v_out)

        # Skew: lane r (with the row's buffer tag, depthwise and valid bits) enters PE(r, 0) r cycles
        # late; its data also enters column r from the top then (depthwise rows), 0 beyond the lanes.
        for r in range(self._rows):
            lane = Signal.like(pes[r][0].a_in, name=f"lane{r}")
            m.d.comb += [
                lane.data.eq(self.a_data[r]),
                lane.buf.eq(self.a_buf),
                lane.dw.eq(self.a_dw),
                lane.valid.eq(self.a_valid),
            ]
            skewed = delay_line(m, lane, r, name=f"skew{r}")
            m.d.comb += pes[r][0].a_in.eq(skewed)
            if r < self._cols:
                m.d.comb += pes[0][r].v_in.eq(skewed.data)

        # De-skew: column c's result leaves the bottom row cols-1-c cycles before the last column's.
        bottom = pes[-1]
        for c in range(self._cols):
            m.d.comb += self.out_data[c].eq(
                delay_line(m, bottom[c].psum_out, self._cols - 1 - c, name=f"deskew{c}"))
        # The valid bit leaving the bottom-right PE (1 cycle after its input) is aligned with that PE's
        # (un-delayed) result, ProcessingElement.LATENCY cycles after its input.
        m.d.comb += self.out_valid.eq(
            delay_line(m, bottom[-1].a_out.valid, ProcessingElement.LATENCY - 1, name="out_valid"))

        return m
