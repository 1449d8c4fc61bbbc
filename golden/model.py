"""The golden model: executes a ``Program`` on numpy state, bit-exact and cycle-exact with the RTL.

Functional state: activation / weight SRAMs (bytes), accumulator SRAM (int32), bias and LUT registers,
the CONFIG registers, and the two PE weight buffers. Commands take effect in program order: the
program's ``wait`` tokens order every conflicting pair of commands of different units, which the model
checks as it goes (``golden/deps.py``; an unordered pair raises ``HazardError``), so the overlapping
units of the hardware compute the same result. Timing comes from
``timing.CycleModel``; energy from the configuration's energy table, one cost per counted event.
"""
from __future__ import annotations

import numpy as np

from opennpu.config import NpuConfig

from . import numerics
from .checks import data_in_beats, data_in_bytes, dw_stream_words, k_tile, quant_params, stream_weight_words, validate, weight_words
from .deps import DependencyTracker, HazardError, checked
from .isa import ActFn, AStep, Buf, Command, ErrorCode, LutTable, Opcode, Precision
from .program import COUNTER_NAMES, Program, ProgramError, Result
from .timing import CycleModel

__all__ = ["GoldenNpu", "validate", "k_tile", "weight_words", "stream_weight_words", "event_costs",
           "energy_by_event", "derive_energy", "reported_counters", "advance", "ProgramError", "HazardError"]

COUNTER_BEATS_BYTES = 8 * len(COUNTER_NAMES)
REJECTED_MAX = 0xFFFF


def advance(timeline: CycleModel, cmd: Command, config: NpuConfig) -> int:
    """Dispatch the accepted command ``cmd`` (with its tokens) on ``timeline``; its dispatch cycle. The
    one mapping from a command to its cycle-model timing: the golden model runs it, and
    ``golden.reorder`` replays it to rank orders."""
    op, c = cmd.op, config
    if op in (Opcode.CONFIG, Opcode.FENCE):
        return timeline.barrier()
    if op == Opcode.COUNTERS:
        return timeline.counters_snapshot(c.beats(COUNTER_BEATS_BYTES))
    if op in (Opcode.LOAD, Opcode.LOAD_BIAS, Opcode.LOAD_QUANT, Opcode.LOAD_LUT):
        buf = cmd.table if op == Opcode.LOAD_LUT else getattr(cmd, "buf", 0)     # (``data_in_beats``)
        return timeline.load(cmd.wait, data_in_beats(op, buf, getattr(cmd, "rows", 0), c))
    if op == Opcode.PRELOAD:
        return timeline.preload(cmd.wait)
    if op == Opcode.COMPUTE:
        if c.dataflow == "os":
            return timeline.compute_os(cmd.wait, cmd.rows, cmd.mrows)
        return timeline.compute(cmd.wait, dw_stream_words(c, cmd.rows) if cmd.dw else cmd.rows)
    if op == Opcode.ACTIVATE:
        return timeline.activate(cmd.wait, cmd.rows, cmd.dest == 1, cmd.ew == 1)
    word_bytes = {Buf.ACT: c.act_word_bytes, Buf.WGT: c.wgt_word_bytes, Buf.ACC: 4 * c.cols}[Buf(cmd.buf)]
    return timeline.store(cmd.wait, c.beats(word_bytes) * cmd.rows)


def event_costs(config: NpuConfig, precision: Precision = Precision.INT8) -> dict[str, int]:
    """Energy in fJ per unit of each counter (per word for SRAM accesses, per byte for DMA, per MAC,
    per activation-unit element). The RTL's ``energy_fj`` accumulator uses the same table."""
    e = config.energy

    def sram(word_bytes: int, depth: int) -> int:
        return word_bytes * e.sram_fj_per_byte(word_bytes * depth)

    act = sram(config.act_word_bytes, config.act_depth)
    wgt = sram(config.wgt_word_bytes, config.wgt_depth)
    acc = sram(config.acc_word_bytes, config.acc_depth)
    return {"act_reads": act, "act_writes": act, "wgt_reads": wgt, "wgt_writes": wgt,
            "acc_reads": acc, "acc_writes": acc, "dma_in_bytes": e.dma_byte_fj,
            "dma_out_bytes": e.dma_byte_fj, "act_ops": e.act_op_fj,
            "macs": e.mac_int4_fj if precision == Precision.A4W4 else e.mac_int8_fj}


def energy_by_event(config: NpuConfig, counters: dict) -> dict[str, int]:
    """The energy (fJ) of each counted event kind (the keys of ``event_costs``), unwrapped.

    Every event but a MAC costs the same in every precision (``event_costs``); ``int4_macs`` of the
    ``macs`` cost ``mac_int4_fj``, the rest ``mac_int8_fj``.
    """
    int8, a4w4 = event_costs(config), event_costs(config, Precision.A4W4)
    parts = {name: counters[name] * cost for name, cost in int8.items() if name != "macs"}
    parts["macs"] = (counters["macs"] - counters["int4_macs"]) * int8["macs"] + counters["int4_macs"] * a4w4["macs"]
    return parts


def derive_energy(config: NpuConfig, counters: dict) -> int:
    """``energy_fj`` from the event counters, equal to what the hardware accumulator holds. The counters
    wrap at ``counter_bits``, so the sum is taken modulo ``2 ** counter_bits`` too: the result is exact
    whenever the accumulator is."""
    return sum(energy_by_event(config, counters).values()) & config.counter_mask


def reported_counters(config: NpuConfig, counters: dict) -> dict:
    """The counters a driver reports: as read from the hardware, with ``energy_fj`` derived from the
    events when the configuration has no energy accumulator (the hardware reads 0 there)."""
    if config.energy_counter:
        return dict(counters)
    return dict(counters, energy_fj=derive_energy(config, counters))


class GoldenNpu:
    """Numpy model of one NPU. ``run(program)`` may be called repeatedly; state persists like
    hardware does between programs, counters included (``reset()`` starts over)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        self.reset()

    # -- state ------------------------------------------------------------------------------------
    def reset(self):
        c = self.config
        self.act = np.zeros((c.act_depth, c.act_word_bytes), np.uint8)
        self.wgt = np.zeros((c.wgt_depth, c.wgt_word_bytes), np.uint8)
        self.acc = np.zeros((c.acc_depth, c.cols), np.int32)     # (int32 adds wrap as the hardware's do)
        self.bias = [np.zeros(c.cols, np.int64) for _ in range(2)]   # two banks
        self.quant = [(np.zeros(c.cols, np.int64), np.zeros(c.cols, np.int64)) for _ in range(2)]  # (M0, shift)
        self.lut = np.zeros(256, np.int64)
        self.ew_tables = np.zeros((2, 256), np.int64)    # LOAD_LUT table=1: X, Y
        self.pe_weights = [np.zeros((2 * c.rows, c.cols), np.int64) for _ in range(2)]
        self._pe_float = [w.astype(np.float32) for w in self.pe_weights]    # (the same, for the matmul)
        self.pe_macs = [0, 0]                 # useful MACs per row for each PE buffer
        self.cur = 0                          # PE buffer the next COMPUTE uses
        self.regs = dict(precision=Precision.INT8, act=ActFn.CLAMP, out_zp=0, qmin=-128, qmax=127,
                         shift=0, multiplier=0, single_round=0, dw_width=0, dw_period=0, dw_height=0, dw_pad=0,
                         dw_stride2=0)
        self.error = ErrorCode.OK
        self.rejected = 0
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.timeline = CycleModel(c.rows, c.cols, c.dataflow)
        self.deps = DependencyTracker(c)
        self._costs = {p: event_costs(c, p) for p in Precision}
        self._valid: dict = {}                # (command, precision, cur) -> checked(...): the checks' cache
        self._handlers = {op: getattr(self, "_" + op.name.lower()) for op in Opcode}
        self.trace: list[tuple[object, int]] = []   # (command or raw word, dispatch cycle)

    def _count(self, **events):
        """Add events to the counters and their energy to ``energy_fj`` (if the hardware has it); a4w4
        MACs to ``int4_macs`` too. Every counter wraps at ``counter_bits``, as in hardware."""
        precision, mask, counters = self.regs["precision"], self.config.counter_mask, self.counters
        if precision == Precision.A4W4 and "macs" in events:
            events["int4_macs"] = events["macs"]
        cost = self._costs[precision]
        energy = 0
        for name, n in events.items():
            counters[name] = (counters[name] + n) & mask
            energy += n * cost.get(name, 0)
        if self.config.energy_counter:            # (modulo 2^bits: the same as adding event by event)
            counters["energy_fj"] = (counters["energy_fj"] + energy) & mask

    # -- execution --------------------------------------------------------------------------------
    def run(self, program: Program) -> Result:
        data_in = program.data_in
        self._din = memoryview(data_in if isinstance(data_in, bytes) else bytes(data_in))
        self._dout = bytearray()
        commands = program.checked_commands()      # (ValueError naming a bad entry before anything runs)
        for index, command in enumerate(commands):
            self._step(index, command)
        if len(self._din):
            raise ProgramError(f"{len(self._din)} data-in bytes left over after the last command")
        self.counters["cycles"] = self.timeline.total_cycles() & self.config.counter_mask
        return Result(bytes(self._dout), reported_counters(self.config, self.counters), self.error,
                      self.rejected)

    def _step(self, index: int, command):
        """One command: a ``Command`` or a raw word (``checks.validate``)."""
        code, cmd, spans = checked(command, self.config, self.regs["precision"], self.cur, self._valid)
        if code != ErrorCode.OK:
            if self.error == ErrorCode.OK:
                self.error = code
            self.rejected = min(self.rejected + 1, REJECTED_MAX)       # 16-bit saturating in hardware
            self.trace.append((command, self._reject(command)))
            return
        self.deps.dispatch_spans(index, cmd, spans)
        d = self._handlers[cmd.op](cmd)
        self.trace.append((cmd, d))

    def _reject(self, command) -> int:
        """A rejected command: nothing runs, but the data-in it takes (``checks.data_in_bytes``) is
        consumed and dropped by the LD unit, as a LOAD of that many beats would take them."""
        nbytes = data_in_bytes(command, self.config)
        if not nbytes:
            return self.timeline.reject()
        d = self.timeline.load(0, nbytes // self.config.bus_bytes)
        self._take(nbytes)
        self._count(dma_in_bytes=nbytes)
        return d

    def _take(self, nbytes: int) -> memoryview:
        if len(self._din) < nbytes:
            raise ProgramError(f"data-in stream ran out: a command needs {nbytes} bytes, "
                               f"{len(self._din)} left")
        chunk, self._din = self._din[:nbytes], self._din[nbytes:]
        return chunk

    def _push(self, data: bytes):
        """Data-out: pad to whole beats."""
        beats = self.config.beats(len(data))
        self._dout += data + bytes(beats * self.config.bus_bytes - len(data))
        self._count(dma_out_bytes=beats * self.config.bus_bytes)

    def _push_rows(self, rows: np.ndarray):
        """Data-out: each row of ``rows`` (uint8) as ``_push`` sends it, all at once."""
        width = self.config.beats(rows.shape[1]) * self.config.bus_bytes
        if width != rows.shape[1]:
            padded = np.zeros((rows.shape[0], width), np.uint8)
            padded[:, :rows.shape[1]] = rows
            rows = padded
        self._dout += rows.tobytes()
        self._count(dma_out_bytes=width * rows.shape[0])

    def _config(self, cmd):
        d = advance(self.timeline, cmd, self.config)
        f = cmd.fields
        self.regs.update(precision=Precision(f["precision"]), act=ActFn(f["act"]), out_zp=f["out_zp"],
                         qmin=f["qmin"], qmax=f["qmax"], shift=f["shift"], multiplier=f["multiplier"],
                         single_round=f["single_round"], dw_width=f["dw_width"], dw_period=f["dw_period"],
                         dw_height=f["dw_height"], dw_pad=f["dw_pad"], dw_stride2=f["dw_stride2"])
        return d

    def _fence(self, cmd):
        return advance(self.timeline, cmd, self.config)

    def _load(self, cmd):
        buf, c = Buf(cmd.buf), self.config
        sram = self.act if buf == Buf.ACT else self.wgt
        word = sram.shape[1]
        beats = c.beats(word)
        d = advance(self.timeline, cmd, c)
        raw = np.frombuffer(self._take(beats * c.bus_bytes * cmd.rows), np.uint8)
        sram[cmd.addr:cmd.addr + cmd.rows] = raw.reshape(cmd.rows, beats * c.bus_bytes)[:, :word]
        self._count(dma_in_bytes=beats * c.bus_bytes * cmd.rows,
                    **{("act_writes" if buf == Buf.ACT else "wgt_writes"): cmd.rows})
        return d

    def _load_register(self, cmd, nbytes: int) -> tuple[int, bytes]:
        beats = self.config.beats(nbytes)
        d = advance(self.timeline, cmd, self.config)
        data = bytes(self._take(beats * self.config.bus_bytes)[:nbytes])
        self._count(dma_in_bytes=beats * self.config.bus_bytes)
        return d, data

    def _load_bias(self, cmd):
        d, data = self._load_register(cmd, 4 * self.config.cols)
        self.bias[cmd.bank] = np.frombuffer(data, "<i4").astype(np.int64)
        return d

    def _load_quant(self, cmd):
        d, data = self._load_register(cmd, 5 * self.config.cols)
        multipliers, shifts = quant_params(data, self.config)
        self.quant[cmd.bank] = (np.array(multipliers, np.int64), np.array(shifts, np.int64))
        return d

    def _load_lut(self, cmd):
        table = LutTable(cmd.table)
        d, data = self._load_register(cmd, table.nbytes)
        if table == LutTable.EW:
            self.ew_tables = np.frombuffer(data, "<i4").astype(np.int64).reshape(2, 256)
        else:
            self.lut = np.frombuffer(data, np.int8).astype(np.int64)
        return d

    def _preload(self, cmd):
        precision = self.regs["precision"]
        words = weight_words(precision, cmd.krows)
        target = 1 - self.cur
        d = advance(self.timeline, cmd, self.config)
        rows = self._weight_rows(cmd.addr, words)
        tile = np.zeros_like(self.pe_weights[target])
        tile[:cmd.krows, :cmd.ncols] = rows[:cmd.krows, :cmd.ncols]
        self.pe_weights[target] = tile
        self._pe_float[target] = tile.astype(np.float32)
        self.pe_macs[target] = cmd.krows * cmd.ncols
        self.cur = target
        self._count(wgt_reads=words)
        return d

    def _weight_rows(self, addr: int, words: int) -> np.ndarray:
        """Weight SRAM words ``addr .. addr+words`` as K rows of int values (a new array): one per word in
        int8; two per word in the int4 modes, bytes [0, cols/2) row 2i, [cols/2, cols) row 2i+1."""
        raw = self.wgt[addr:addr + words]
        if self.regs["precision"] == Precision.INT8:
            return raw.view(np.int8).astype(np.int64)
        return numerics.unpack_int4(raw).reshape(2 * words, self.config.cols)

    def _compute(self, cmd):
        if self.config.dataflow == "os":
            return self._compute_os(cmd)
        d = advance(self.timeline, cmd, self.config)
        if cmd.dw:
            return self._compute_dw(cmd, d)
        step = AStep(cmd.astep).words
        raw = (self.act[cmd.aaddr:cmd.aaddr + step * (cmd.rows - 1) + 1:step] if step
               else np.repeat(self.act[cmd.aaddr:cmd.aaddr + 1], cmd.rows, axis=0))
        if self.regs["precision"] == Precision.A4W4:
            a = numerics.unpack_int4(raw).astype(np.float32)
        else:
            a = raw.view(np.int8).astype(np.float32)
        # One tile's products: |a*w| <= 2^14 summed over at most 2 * 64 K rows (< 2^21), so float32 holds
        # every partial sum exactly and the BLAS product equals the integer one (no int32 wrap needed).
        result = (a @ self._pe_float[self.cur][:a.shape[1]]).astype(np.int32)
        rows = slice(cmd.accaddr, cmd.accaddr + cmd.rows)
        if cmd.accumulate:
            self.acc[rows] += result                 # (int32: wraps)
        else:
            self.acc[rows] = result
        self._count(act_reads=cmd.rows, busy_cycles=cmd.rows, macs=cmd.rows * self.pe_macs[self.cur],
                    acc_writes=cmd.rows, acc_reads=cmd.rows if cmd.accumulate else 0)
        return d

    def _dw_stream(self, cmd) -> tuple[np.ndarray, np.ndarray]:
        """A depthwise COMPUTE's stream (``golden/isa.py``): (whether each word is a data position, the
        words, int8 lanes)."""
        c, r = self.config, self.regs
        width, period, height = r["dw_width"], r["dw_period"], r["dw_height"]
        q = np.arange(dw_stream_words(c, cmd.rows))
        data = np.zeros(q.size, bool)
        if period:
            # Column dcol >= period counts up to 255 and wraps to column 0 of the same row.
            skip = 256 - cmd.dcol if cmd.dcol >= period else 0
            row, col = np.divmod(cmd.drow * period + (cmd.dcol if not skip else 0) + q - skip, period)
            data = (q >= skip) & (row >= 0) & (row < height) & (col < width)
        words = np.full((q.size, c.act_word_bytes), r["dw_pad"], np.int64)
        count = int(data.sum())
        words[data] = self.act[cmd.aaddr:cmd.aaddr + count].view(np.int8)
        return data, words

    def _compute_dw(self, cmd, d: int) -> int:
        """Depthwise COMPUTE: output j, channel n = sum_k word[j + R - 1 - k][n] * W[k][n]; the outputs of
        image columns below ``dw_width`` (``dw_stride2``: even ones, in even rows) written in order."""
        c, r = self.config, self.regs
        data, words = self._dw_stream(cmd)
        lanes = min(c.rows, c.cols)
        taps = np.lib.stride_tricks.sliding_window_view(words[:, :lanes], c.rows, axis=0)   # (rows, lanes, R)
        weights = self.pe_weights[self.cur][c.rows - 1::-1, :lanes]          # (R, lanes): tap R-1-k first
        result = np.zeros((cmd.rows, c.cols), np.int64)
        result[:, :lanes] = np.einsum("jnk,kn->jn", taps, weights)
        period, j = r["dw_period"], np.arange(cmd.rows)
        written = np.zeros(cmd.rows, bool)
        if period:
            col = j % period
            written = col < r["dw_width"]
            if r["dw_stride2"]:
                written &= (col % 2 == 0) & (j // period % 2 == 0)
        out = numerics.wrap_int32(result[written])
        n = len(out)
        rows = slice(cmd.accaddr, cmd.accaddr + n)
        self.acc[rows] = numerics.wrap_int32(self.acc[rows] + out) if cmd.accumulate else out
        self._count(act_reads=int(data.sum()), busy_cycles=len(words), macs=n * self.pe_macs[self.cur],
                    acc_writes=n, acc_reads=n if cmd.accumulate else 0)
        return d

    def _compute_os(self, cmd):
        """Output-stationary COMPUTE: ``rows`` K steps into an ``mrows`` x ``ncols`` output tile."""
        c, precision = self.config, self.regs["precision"]
        words = stream_weight_words(precision, cmd.rows)
        d = advance(self.timeline, cmd, c)
        raw_a = self.act[cmd.aaddr:cmd.aaddr + cmd.rows]
        if precision == Precision.A4W4:      # step j, lane i: K values 2j and 2j+1 of output row i
            a = numerics.unpack_int4(raw_a).reshape(cmd.rows, c.rows, 2).transpose(1, 0, 2).reshape(c.rows, -1)
        else:                                # step j, lane i: K value j of output row i
            a = raw_a.view(np.int8).astype(np.int64).T
        w = self._weight_rows(cmd.waddr, words)[:a.shape[1]]
        w[:, cmd.ncols:] = 0
        result = numerics.wrap_int32(a[:cmd.mrows] @ w)
        rows = slice(cmd.accaddr, cmd.accaddr + cmd.mrows)
        self.acc[rows] = numerics.wrap_int32(self.acc[rows] + result) if cmd.accumulate else result
        k_per_step = 2 if precision == Precision.A4W4 else 1
        self._count(act_reads=cmd.rows, wgt_reads=words, busy_cycles=cmd.rows,
                    macs=cmd.rows * k_per_step * cmd.mrows * cmd.ncols,
                    acc_writes=cmd.mrows, acc_reads=cmd.mrows if cmd.accumulate else 0)
        return d

    def _activate(self, cmd):
        c, r = self.config, self.regs
        to_output = cmd.dest == 1
        d = advance(self.timeline, cmd, c)
        multiplier, shift = self.quant[cmd.bank] if cmd.perchan else (r["multiplier"], r["shift"])
        if cmd.ew:      # (lane i: value i of the words; lanes beyond them read 0)
            x, y = (np.zeros((cmd.rows, c.cols), np.int64) for _ in range(2))
            lanes = min(c.rows, c.cols)
            x[:, :lanes] = self.act[cmd.xaddr:cmd.xaddr + cmd.rows, :lanes].view(np.int8)
            y[:, :lanes] = self.act[cmd.yaddr:cmd.yaddr + cmd.rows, :lanes].view(np.int8)
            acc, bias = self.ew_tables[0][x + 128], self.ew_tables[1][y + 128]
            self._count(act_reads=2 * cmd.rows)
        else:
            acc, bias = self.acc[cmd.accaddr:cmd.accaddr + cmd.rows], self.bias[cmd.bank]
            self._count(acc_reads=cmd.rows)
        y = numerics.activation_unit(acc, bias, multiplier, shift, r["out_zp"], r["qmin"], r["qmax"],
                                     self.lut if r["act"] == ActFn.LUT else None, bool(r["single_round"]))
        out = y.astype(np.int8).view(np.uint8)
        self._count(act_ops=cmd.rows * c.cols)
        if to_output:
            self._push_rows(out)
        else:
            lanes = min(c.rows, c.cols)
            words = np.zeros((cmd.rows, c.act_word_bytes), np.uint8)
            words[:, :lanes] = out[:, :lanes]
            self.act[cmd.aaddr:cmd.aaddr + cmd.rows] = words
            self._count(act_writes=cmd.rows)
        return d

    def _store(self, cmd):
        buf, c = Buf(cmd.buf), self.config
        if buf == Buf.ACC:
            words = [row.astype("<i4").tobytes() for row in self.acc[cmd.addr:cmd.addr + cmd.rows]]
        else:
            sram = self.act if buf == Buf.ACT else self.wgt
            words = [row.tobytes() for row in sram[cmd.addr:cmd.addr + cmd.rows]]
        d = advance(self.timeline, cmd, c)
        self._count(**{f"{buf.name.lower()}_reads": cmd.rows})
        self._push_rows(np.frombuffer(b"".join(words), np.uint8).reshape(len(words), -1))
        return d

    def _counters(self, cmd):
        d = advance(self.timeline, cmd, self.config)
        snapshot = dict(self.counters, cycles=d & self.config.counter_mask)
        self._push(b"".join(snapshot[name].to_bytes(8, "little") for name in COUNTER_NAMES))
        return d
