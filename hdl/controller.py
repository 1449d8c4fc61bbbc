"""The NPU core: SRAMs, systolic array, activation unit, the five execution units and the dispatcher.

The dispatcher looks at the head command (held by ``hdl/top.py``) every cycle and, in this order:

- rejects it if ``CommandChecker`` reports an error (sticky ``error``, ``rejected`` += 1, nothing runs);
- CONFIG / FENCE / COUNTERS: dispatches once every unit is idle;
- otherwise dispatches to its unit when that unit is free and none of the command's accesses
  conflicts with an access of a command in flight in another unit (``hdl/hazard.py``).

The timing of every unit is documented in its module and modelled in ``golden/timing.py``. The whole
core runs under one clock enable (``hdl/top.py`` freezes it on stream back-pressure), so the core
itself never sees a stall: the dispatcher and every unit below run under their own registered copy
of it (``hdl/freeze.py``), all loaded with ``run_next``.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import COMMAND_BITS, ActFn, Buf, Opcode, Precision
from opennpu.golden.timing import ACT_LATENCY, Space, array_latency

from .activation import ActivationUnit
from .array import SystolicArray
from .common import preload_words, stream_words
from .counters import Events, counters_layout
from .decoder import CommandChecker, command_layout
from .execute_unit import ExecuteUnit
from .freeze import EnableCopies
from .os_array import OutputStationaryArray
from .os_execute_unit import OsExecuteUnit
from .hazard import AccessLayout, access, conflict
from .load_unit import LoadKind, LoadUnit
from .preload_unit import PreloadUnit
from .sram import DualWriteMemory, ReplicatedMemory
from .store_unit import StoreMode, StoreUnit
from .writeback_unit import WritebackUnit

__all__ = ["Controller", "HeadState", "PreDecode", "INFLIGHT_GROUPS", "check_rtl_config"]

#: In-flight access groups of the dispatcher: (name, access slots), in ``HeadState.hits`` bit order.
INFLIGHT_GROUPS = (("ld", 1), ("pl", 2), ("ex_issue", 3), ("ex_drain", 3), ("wb", 4), ("st", 2))


class HeadState(data.Struct):
    """The dispatcher's head command with its decode, computed while it waited behind the head.

    ``error``: the ``CommandChecker`` code in the precision the head sees; ``accs``: its accesses
    (``golden/timing.py``); ``hits``: bit g set when an access conflicts with an access of in-flight group
    g (``INFLIGHT_GROUPS``) -- valid while that group stays busy.
    """
    valid: 1
    word: COMMAND_BITS
    error: 3
    accs: data.ArrayLayout(AccessLayout, 4)
    hits: len(INFLIGHT_GROUPS)

_PRECISIONS = tuple(Precision)


class PreAccess(data.Struct):
    """An access decoded before the state it depends on is known: ``hi`` for every precision; a PE weight
    buffer access (``space`` PEW) holds in ``lo`` whether it is ``~cur`` (PRELOAD) rather than ``cur``."""
    valid: 1
    write: 1
    space: 3
    lo: 17
    hi: data.ArrayLayout(17, len(_PRECISIONS))


class PreDecode(data.Struct):
    """The decode of a command as it enters the pre-head register: ``CommandChecker`` error code and
    accesses for every precision (``Precision`` order), resolved against precision / ``cur`` later."""
    error: data.ArrayLayout(3, len(_PRECISIONS))
    accs: data.ArrayLayout(PreAccess, 4)


_LOAD_OPS = (Opcode.LOAD, Opcode.LOAD_BIAS, Opcode.LOAD_LUT)
_BARRIER_OPS = (Opcode.CONFIG, Opcode.FENCE, Opcode.COUNTERS)


def check_rtl_config(config: NpuConfig):
    """Raise ``ValueError`` for configurations the RTL does not implement (call before elaborating)."""
    if config.dataflow not in ("ws", "os"):
        raise ValueError(f"the RTL implements the 'ws' and 'os' dataflows; got dataflow={config.dataflow!r}")


class Controller(wiring.Component):
    """Everything that the stream back-pressure freezes.

    Members
    -------
    head : In(HeadState)
        The dispatcher's head register, held by ``hdl/top.py`` because it must load while the core is
        frozen (a program waiting for its next command).
    cmd_word : In(COMMAND_BITS); cmd_decode : Out(PreDecode)
        A command entering the pre-head register and its decode (registered with it by ``hdl/top.py``).
    next_word : In(COMMAND_BITS); next_decode : In(PreDecode); running : In(1)
        The command waiting behind the head with its registered decode, and whether the core advances
        this cycle.
    run_next : In(1)
        Whether the core advances in the next cycle (``running`` one cycle later): loaded into the
        enable copies of the dispatcher and the units.
    next_head : Out(HeadState)
        What the head becomes if it loads ``next_word`` at the end of this cycle (``valid`` = 1). Valid
        only in the cycles where it may load: the head is empty or leaves (``consume`` and ``running``).
    kept_hits : Out(len(INFLIGHT_GROUPS))
        ``head.hits`` for the next cycle if the head keeps its command and the core advances.
    consume : Out(1)
        The head is dispatched or rejected this cycle.
    din : In(8 * bus_bytes); want_in, want_in_next : Out(1)
        Data-in beat; the LD unit consumes one this cycle / will want one in the next cycle if this
        cycle runs.
    push, push_data : Out
        A data-out beat this cycle.
    counters : In(ArrayLayout(unsigned(counter_bits), n))
        The values a COUNTERS snapshot samples (``Counters.snapshot``, hdl/counters.py).
    events : Out(Events)
    busy : Out(1)
        Some unit is executing.
    error : Out(3); rejected : Out(16)
        Sticky first error code and the number of rejected commands (saturates at 65535).
    """

    def __init__(self, config: NpuConfig):
        check_rtl_config(config)
        if SystolicArray.latency_for(config.rows, config.cols) != array_latency(config.rows, config.cols):
            raise AssertionError("hdl/array.py and golden/timing.py disagree on the array latency")
        if ActivationUnit.latency_for() != ACT_LATENCY:
            raise AssertionError("hdl/activation.py and golden/timing.py disagree on the activation latency")
        self._config = c = config
        self._os = config.dataflow == "os"
        int4_pairs = "a4w4" in c.precisions
        if self._os:      # no PL unit: the weights stream through the array with the activations
            self.array, self.pl, self.ex = (OutputStationaryArray(c.rows, c.cols, int4_pairs=int4_pairs), None,
                                            OsExecuteUnit(c))
        else:
            self.array, self.pl, self.ex = (SystolicArray(c.rows, c.cols, int4_pairs=int4_pairs), PreloadUnit(c),
                                            ExecuteUnit(c))
        self.act_fn = ActivationUnit(c.cols, min(c.bus_bytes, 256))
        self.ld = LoadUnit(c)
        self.wb, self.st = WritebackUnit(c), StoreUnit(c)
        super().__init__({
            "head": In(HeadState), "cmd_word": In(COMMAND_BITS), "cmd_decode": Out(PreDecode),
            "next_word": In(COMMAND_BITS), "next_decode": In(PreDecode), "running": In(1),
            "run_next": In(1),
            "next_head": Out(HeadState), "kept_hits": Out(len(INFLIGHT_GROUPS)), "consume": Out(1),
            "din": In(8 * c.bus_bytes), "want_in": Out(1), "want_in_next": Out(1),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "counters": In(counters_layout(c)),
            "events": Out(Events), "busy": Out(1),
            "error": Out(3), "rejected": Out(16),
        })

    def _accesses(self, m, word, precision, cur):
        """The (at most four) accesses of command ``word``, mirroring golden/model.py: a list of
        combinational ``AccessLayout`` signals (unused ones invalid)."""
        v = {op: data.View(command_layout(op), word) for op in Opcode}
        accs = [Signal(AccessLayout) for i in range(4)]
        with m.Switch(word[:4]):
            with m.Case(Opcode.LOAD):
                m.d.comb += accs[0].eq(access(m, v[Opcode.LOAD].buf, v[Opcode.LOAD].addr, v[Opcode.LOAD].rows, 1))
            with m.Case(Opcode.LOAD_BIAS):
                m.d.comb += accs[0].eq(access(m, Space.BIAS, v[Opcode.LOAD_BIAS].bank, 1, 1))
            with m.Case(Opcode.LOAD_LUT):
                m.d.comb += accs[0].eq(access(m, Space.LUT, 0, 1, 1))
            if not self._os:
                with m.Case(Opcode.PRELOAD):
                    p = v[Opcode.PRELOAD]
                    m.d.comb += [accs[0].eq(access(m, Space.WGT, p.addr, preload_words(precision, p.krows), 0)),
                                 accs[1].eq(access(m, Space.PEW, ~cur, 1, 1))]
            with m.Case(Opcode.COMPUTE):
                x = v[Opcode.COMPUTE]
                if self._os:
                    m.d.comb += [accs[0].eq(access(m, Space.ACT, x.aaddr, x.rows, 0)),
                                 accs[1].eq(access(m, Space.WGT, x.waddr, stream_words(precision, x.rows), 0)),
                                 accs[2].eq(access(m, Space.ACC, x.accaddr, x.mrows, 1))]
                else:
                    m.d.comb += [accs[0].eq(access(m, Space.ACT, x.aaddr, x.rows, 0)),
                                 accs[1].eq(access(m, Space.ACC, x.accaddr, x.rows, 1)),
                                 accs[2].eq(access(m, Space.PEW, cur, 1, 0))]
            with m.Case(Opcode.ACTIVATE):
                a = v[Opcode.ACTIVATE]
                m.d.comb += [accs[0].eq(access(m, Space.ACC, a.accaddr, a.rows, 0)),
                             accs[1].eq(access(m, Space.BIAS, a.bank, 1, 0)),
                             accs[2].eq(access(m, Space.LUT, 0, 1, 0)),
                             accs[3].eq(Mux(a.dest, access(m, Space.OUT, 0, 1, 1),
                                            access(m, Space.ACT, a.aaddr, a.rows, 1)))]
            with m.Case(Opcode.STORE):
                st = v[Opcode.STORE]
                m.d.comb += [accs[0].eq(access(m, st.buf, st.addr, st.rows, 0)),
                             accs[1].eq(access(m, Space.OUT, 0, 1, 1))]
            with m.Case(Opcode.COUNTERS):
                m.d.comb += accs[0].eq(access(m, Space.OUT, 0, 1, 1))
        return accs

    def elaborate(self, platform):
        m = Module()                     # the dispatcher; ``units``: the submodules (hdl/freeze.py)
        c = self._config

        # -- storage and datapath ---------------------------------------------------------------
        # Block-RAM friendly SRAMs (hdl/sram.py): read-port copies, parity banks for the two act writers.
        units = {}
        units["act_sram"] = act = DualWriteMemory(width=8 * c.act_word_bytes, depth=c.act_depth)
        units["wgt_sram"] = wgt = ReplicatedMemory(width=8 * c.wgt_word_bytes, depth=c.wgt_depth, read_ports=2)
        units["acc_sram"] = acc = ReplicatedMemory(width=32 * c.cols, depth=c.acc_depth, read_ports=3,
                                                   transparent=(0,))
        units["array"] = array = self.array
        units["act_fn"] = act_fn = self.act_fn
        units["ld"] = ld = self.ld
        pl = self.pl
        if pl is not None:
            units["pl"] = pl
        units["ex"] = ex = self.ex
        units["wb"] = wb = self.wb
        units["st"] = st = self.st

        wiring.connect(m, ld.act_wr, act.wr0)
        wiring.connect(m, wb.act_wr, act.wr1)
        wiring.connect(m, ex.act_rd, act.rd0)
        wiring.connect(m, st.act_rd, act.rd1)
        wiring.connect(m, ld.wgt_wr, wgt.wr)
        wiring.connect(m, (ex if self._os else pl).wgt_rd, wgt.rd0)
        wiring.connect(m, st.wgt_rd, wgt.rd1)
        wiring.connect(m, ex.acc_wr, acc.wr)
        wiring.connect(m, ex.acc_rmw_rd, acc.rd0)
        wiring.connect(m, wb.acc_rd, acc.rd1)
        wiring.connect(m, st.acc_rd, acc.rd2)

        if self._os:
            m.d.comb += [
                array.a_valid.eq(ex.a_valid), array.a_first.eq(ex.a_first), array.a_last.eq(ex.a_last),
                array.a_data.eq(ex.a_data), array.w_data.eq(ex.w_data),
                array.drain_row.eq(ex.drain_row), ex.drain_data.eq(array.drain_data),
            ]
        else:
            m.d.comb += [
                array.a_valid.eq(ex.a_valid), array.a_data.eq(ex.a_data), array.a_buf.eq(ex.a_buf),
                ex.out_valid.eq(array.out_valid), ex.out_data.eq(array.out_data),
                array.w_en.eq(pl.w_en), array.w_row.eq(pl.w_row), array.w_buf.eq(pl.w_buf),
                array.w_data.eq(pl.w_data), array.w_clear.eq(pl.w_clear), array.w_clear_buf.eq(pl.w_clear_buf),
            ]
        pl_busy = pl.busy if pl is not None else C(0)
        m.d.comb += [
            act_fn.i_valid.eq(wb.i_valid), act_fn.i_acc.eq(wb.i_acc),
            wb.o_valid.eq(act_fn.o_valid), wb.o_data.eq(act_fn.o_data),
            act_fn.bias.eq(ld.bias[wb.bias_bank]), act_fn.lut_we.eq(ld.lut_we), act_fn.lut_addr.eq(ld.lut_addr),
            act_fn.lut_wdata.eq(ld.lut_wdata),
            ld.din.eq(self.din), self.want_in.eq(ld.want), self.want_in_next.eq(ld.want_next),
            st.counters.eq(self.counters),
            self.push.eq(wb.push | st.push),
            self.push_data.eq(Mux(wb.push, wb.push_data, st.push_data)),
            self.busy.eq(ld.busy | pl_busy | ex.issue_busy | ex.drain_busy | wb.busy | st.busy),
        ]

        # -- CONFIG registers -------------------------------------------------------------------
        precision = Signal(2, init=Precision.INT8)
        use_lut = Signal()
        out_zp, qmin, qmax = Signal(signed(8)), Signal(signed(8), init=-128), Signal(signed(8), init=127)
        shift, multiplier = Signal(signed(8)), Signal(31)
        m.d.comb += [(ex if self._os else pl).precision.eq(precision),
                     array.int4_pairs.eq(precision == Precision.A4W4),
                     act_fn.use_lut.eq(use_lut), act_fn.out_zp.eq(out_zp), act_fn.qmin.eq(qmin),
                     act_fn.qmax.eq(qmax), act_fn.shift.eq(shift), act_fn.multiplier.eq(multiplier)]

        # -- head: dispatched from registers, decoded the cycle before it loads --------------------
        # The command behind the head (``next_word``, checked and its accesses computed for every
        # precision as it entered the pre-head register) is resolved against the precision and ``cur``
        # it will see and its accesses compared with the in-flight accesses as they will be after this
        # cycle's dispatch; the results are registered with the head. So the dispatch decision only ANDs registered conflict bits with
        # the units' busy flags, and the head still refills in the cycle after a dispatch.
        head_word = self.head.word
        v = {op: data.View(command_layout(op), head_word) for op in Opcode}
        opcode = head_word[:4]
        head = [self.head.accs[i] for i in range(4)]

        # PE weight buffers: COMPUTE uses ``cur``; PRELOAD fills ``~cur`` and then makes it current.
        cur = Signal()
        pe_macs = Array(Signal(16, name=f"pe_macs{i}") for i in range(2))

        # In-flight accesses per unit (valid while the unit, or EX's slot, is busy).
        def slots(name, n):
            return [Signal(AccessLayout, name=f"{name}_acc{i}") for i in range(n)]
        busy = {"ld": ld.busy, "pl": pl_busy, "ex_issue": ex.issue_busy, "ex_drain": ex.drain_busy,
                "wb": wb.busy, "st": st.busy}
        inflight = {name: (busy[name], slots(name, n)) for name, n in INFLIGHT_GROUPS}
        unit_of = {"ld": _LOAD_OPS, "pl": (Opcode.PRELOAD,), "ex_issue": (Opcode.COMPUTE,), "ex_drain": (),
                   "wb": (Opcode.ACTIVATE,), "st": (Opcode.STORE, Opcode.COUNTERS)}
        head_conflicts = {name: self.head.hits[g] for g, (name, _) in enumerate(INFLIGHT_GROUPS)}

        def hazard(*own):
            return Cat(busy & head_conflicts[name] for name, (busy, _) in inflight.items()
                       if name not in own).any()

        all_idle = ~self.busy
        can = Signal()
        with m.Switch(opcode):
            with m.Case(*_BARRIER_OPS):
                m.d.comb += can.eq(all_idle)
            with m.Case(*_LOAD_OPS):
                m.d.comb += can.eq(~ld.busy & ~hazard("ld"))
            with m.Case(Opcode.PRELOAD):
                m.d.comb += can.eq(~pl_busy & ~hazard("pl"))
            with m.Case(Opcode.COMPUTE):
                m.d.comb += can.eq(~ex.issue_busy & ~hazard("ex_issue", "ex_drain"))
            with m.Case(Opcode.ACTIVATE):
                m.d.comb += can.eq(~wb.busy & ~hazard("wb"))
            with m.Case(Opcode.STORE):
                m.d.comb += can.eq(~st.busy & ~hazard("st"))
        dispatch = Signal()
        reject = Signal()
        m.d.comb += [dispatch.eq(self.head.valid & (self.head.error == 0) & can),
                     reject.eq(self.head.valid & (self.head.error != 0)),
                     self.consume.eq(dispatch | reject)]

        with m.If(reject):
            with m.If(self.rejected != 0xFFFF):          # saturating 16-bit count
                m.d.sync += self.rejected.eq(self.rejected + 1)
            with m.If(self.error == 0):
                m.d.sync += self.error.eq(self.head.error)

        # The command behind the head loads only when the head is empty or leaves this cycle, and a valid
        # head without error leaves only by being dispatched. So the next head is decoded assuming that
        # a valid, error-free head dispatches now: from registers alone, never from ``dispatch``.
        # State as the next head will see it: a dispatched CONFIG / PRELOAD changes precision / ``cur``.
        leaving = self.head.valid & (self.head.error == 0)
        next_precision = Mux(leaving & (opcode == Opcode.CONFIG), v[Opcode.CONFIG].precision, precision)
        next_cur = cur ^ (leaving & (opcode == Opcode.PRELOAD))
        # Stage 1 (a command entering the pre-head register): checker and accesses for every precision.
        for p in _PRECISIONS:
            m.submodules[f"checker_{p.label}"] = checker = CommandChecker(c)
            m.d.comb += [checker.word.eq(self.cmd_word), checker.precision.eq(p),
                         self.cmd_decode.error[p].eq(checker.error)]
            for i, a in enumerate(self._accesses(m, self.cmd_word, C(p, 2), C(0))):
                m.d.comb += self.cmd_decode.accs[i].hi[p].eq(a.hi)
                if p == Precision.INT8:   # (nothing but ``hi`` depends on the precision)
                    pre = self.cmd_decode.accs[i]
                    m.d.comb += [pre.valid.eq(a.valid), pre.write.eq(a.write), pre.space.eq(a.space),
                                 pre.lo.eq(a.lo)]
        # Stage 2 (the command behind the head): resolved against the state the next head will see.
        decode = self.next_decode

        def resolved(prec, name):
            accs = []
            for i in range(4):
                pre, acc = decode.accs[i], Signal(AccessLayout, name=f"{name}{i}")
                pew, buf = pre.space == Space.PEW, pre.lo[0] ^ next_cur
                m.d.comb += [acc.valid.eq(pre.valid), acc.write.eq(pre.write), acc.space.eq(pre.space),
                             acc.lo.eq(Mux(pew, buf, pre.lo)),
                             acc.hi.eq(Mux(pew, Cat(~buf, buf), pre.hi[prec]))]
                accs.append(acc)
            return accs
        incoming = resolved(next_precision, "next_acc")
        # The conflict bits use the current precision: they differ only when the head is a CONFIG that
        # leaves, and CONFIG dispatches with every unit idle and records nothing, so then no bit is used.
        compared = resolved(precision, "compared_acc")

        moving = ex.move & self.running              # the drain slot takes the issue slot's accesses

        def hit_any(accs, name):
            """1 when an incoming access conflicts with one of ``accs`` (a registered set of accesses)."""
            hit = Signal(name=f"hit_{name}")
            m.d.comb += hit.eq(Cat(conflict(h, a) for h in compared for a in accs).any())
            return hit

        # Each group's slots after this cycle are the recorded head, the issue slot's accesses (drain slot,
        # moving) or the slots as they are: compare against each registered candidate, select last.
        hits_now = {name: hit_any(accs, name) for name, (_, accs) in inflight.items()}
        hits_head = {n: hit_any(head[:n], f"head{n}") for n in sorted({n for _, n in INFLIGHT_GROUPS})}

        m.d.comb += [self.next_head.valid.eq(1), self.next_head.word.eq(self.next_word),
                     self.next_head.error.eq(decode.error[next_precision]),
                     *[self.next_head.accs[i].eq(a) for i, a in enumerate(incoming)]]
        for g, (name, n) in enumerate(INFLIGHT_GROUPS):
            if name == "ex_drain":
                hit = Mux(moving, hits_now["ex_issue"], hits_now[name])
            elif unit_of[name]:
                recording = leaving & Cat(opcode == op for op in unit_of[name]).any()
                hit = Mux(recording, hits_head[n], hits_now[name])
            else:
                hit = hits_now[name]
            m.d.comb += self.next_head.hits[g].eq(hit)
            # A kept head's bits change only when the drain slot takes over the issue slot's accesses.
            kept = Mux(ex.move, head_conflicts["ex_issue"], head_conflicts[name]) if name == "ex_drain" \
                else head_conflicts[name]
            m.d.comb += self.kept_hits[g].eq(kept)

        def record(unit):
            _, accs = inflight[unit]
            m.d.sync += [slot.eq(h) for slot, h in zip(accs, head)]

        with m.If(ex.move):
            m.d.sync += [d.eq(i) for d, i in zip(inflight["ex_drain"][1], inflight["ex_issue"][1])]

        with m.If(dispatch):
            with m.Switch(opcode):
                with m.Case(Opcode.CONFIG):
                    f = v[Opcode.CONFIG]
                    m.d.sync += [precision.eq(f.precision), use_lut.eq(f.act == ActFn.LUT),
                                 out_zp.eq(f.out_zp), qmin.eq(f.qmin), qmax.eq(f.qmax),
                                 shift.eq(f.shift), multiplier.eq(f.multiplier)]
                with m.Case(*_LOAD_OPS):
                    record("ld")
                    m.d.comb += ld.start.eq(1)
                if not self._os:                  # (the checker rejects PRELOAD in the OS dataflow)
                    with m.Case(Opcode.PRELOAD):
                        record("pl")
                        f = v[Opcode.PRELOAD]
                        m.d.comb += [pl.start.eq(1), pl.target.eq(~cur)]
                        m.d.sync += [cur.eq(~cur), pe_macs[~cur].eq(f.krows * f.ncols)]
                with m.Case(Opcode.COMPUTE):
                    record("ex_issue")
                    m.d.comb += ex.start.eq(1)
                with m.Case(Opcode.ACTIVATE):
                    record("wb")
                    m.d.comb += wb.start.eq(1)
                with m.Case(Opcode.STORE, Opcode.COUNTERS):
                    record("st")
                    m.d.comb += st.start.eq(1)

        # Unit command fields straight from the head word (sampled by the units on ``start``).
        load, pre, comp, act_cmd, store = (v[Opcode.LOAD], v[Opcode.PRELOAD], v[Opcode.COMPUTE],
                                           v[Opcode.ACTIVATE], v[Opcode.STORE])
        m.d.comb += [
            ld.kind.eq(Mux(opcode == Opcode.LOAD, Mux(load.buf == Buf.WGT, LoadKind.WGT, LoadKind.ACT),
                           Mux(opcode == Opcode.LOAD_BIAS, LoadKind.BIAS, LoadKind.LUT))),
            ld.addr.eq(load.addr), ld.rows.eq(load.rows), ld.bank.eq(v[Opcode.LOAD_BIAS].bank),
            ex.aaddr.eq(comp.aaddr), ex.accaddr.eq(comp.accaddr), ex.rows.eq(comp.rows),
            ex.accumulate.eq(comp.accumulate),
            wb.accaddr.eq(act_cmd.accaddr), wb.aaddr.eq(act_cmd.aaddr), wb.rows.eq(act_cmd.rows),
            wb.dest.eq(act_cmd.dest), wb.bank.eq(act_cmd.bank),
            st.mode.eq(Mux(opcode == Opcode.COUNTERS, StoreMode.COUNTERS, store.buf)),
            st.addr.eq(store.addr), st.rows.eq(store.rows),
        ]

        if self._os:
            m.d.comb += [ex.waddr.eq(comp.waddr), ex.mrows.eq(comp.mrows), ex.ncols.eq(comp.ncols)]
        else:
            m.d.comb += [pl.addr.eq(pre.addr), pl.krows.eq(pre.krows), pl.ncols.eq(pre.ncols),
                         ex.buf.eq(cur), ex.row_macs.eq(pe_macs[cur])]

        # -- counter events -----------------------------------------------------------------------
        ev = self.events
        m.d.comb += [
            ev.row.eq(ex.ev_row), ev.macs.eq(ex.macs), ev.int4_macs.eq(precision == Precision.A4W4),
            ev.act_reads.eq(ex.ev_row + st.ev_act_read), ev.act_writes.eq(ld.ev_act_write + wb.ev_act_write),
            ev.wgt_reads.eq((ex if self._os else pl).ev_wgt_read + st.ev_wgt_read), ev.wgt_writes.eq(ld.ev_wgt_write),
            ev.acc_reads.eq(ex.ev_acc_read + wb.ev_acc_read + st.ev_acc_read), ev.acc_writes.eq(ex.ev_acc_write),
            ev.beat_in.eq(ld.ev_beat), ev.beat_out.eq(self.push), ev.act_row.eq(wb.ev_act_op),
        ]

        core = Module()
        enables = EnableCopies(core, platform, self.run_next)
        enables.freeze("dispatcher", m)       # (first: the units' ports keep their units' names in Verilog)
        for name, unit in units.items():
            enables.freeze(name, unit)
        return core
