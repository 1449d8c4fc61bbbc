"""The dispatcher: checks the head command and starts it on its unit once its ``wait`` tokens allow.

No addresses are compared. A command of unit U dispatches when U is free and every unit its ``wait``
tokens (``golden.isa.Wait``) name is idle (``EX_OLDER``: no COMPUTE but the last one is in flight:
none drains while the issue slot holds one, nor besides the last one moved while it is free); a
COMPUTE also dispatches in the cycle EX's issue slot frees (``ex_issue_ends``: its command has issued
its rows and moves on to drain), so rows stream without a gap, a PRELOAD in the cycle PL's frees
(its last PE row is stepped; the writes drain through the array's skew), and a LOAD in the cycle of
the last beat of the one before (data-in beats stream without a gap); an ACTIVATE dispatches once ACT has
read the rows of the one before, whatever bias bank and ``perchan`` either uses (each row's parameters
travel with it through the activation unit); with ``Wait.STREAM``, a PRELOAD, COMPUTE or ACTIVATE also only
once the last command of its ``golden.timing.STREAM_SOURCE`` unit started ``stream_delay`` cycles ago
(a saturating count of the cycles since, per source unit whose delay is more than the one cycle any
two dispatches are apart: EX);
CONFIG, FENCE and COUNTERS dispatch when every unit is idle; a command the checker flags is rejected
(sticky ``error``, ``rejected`` += 1, nothing runs): at once, or, if it takes data-in (a malformed
LOAD), once LD is free, which then consumes its beats and drops them (``discard``), so later LOADs read
their own data. So the dispatch decision is a few gates on registered state, whatever the number of
commands in flight. The compiler sets the tokens (``golden/deps.py``); the golden model and the
drivers refuse a program whose tokens leave a hazard unordered.

The check runs a cycle ahead: as a command enters the pre-head register of ``hdl/top.py`` it is
checked once per configured precision as if it had each opcode (``cmd_codes``: every comparison of the
rules), and as it moves into the head (``next_head``) its code is selected by its opcode and the
precision it will see. Timing: ``golden/timing.py``.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.checks import data_in_beats
from opennpu.golden.isa import COMMAND_BITS, WAIT_FIELD, Opcode, Precision, Wait
from opennpu.golden.timing import STREAM_SOURCE, Unit, stream_delay

from .decoder import HW_OPS, CommandChecker, codes_layout, command_layout, select_code

__all__ = ["HeadState", "UnitBusy", "UnitStart", "Dispatcher", "REJECTED_MAX"]

#: The rejected-command count saturates here (16 bits).
REJECTED_MAX = 0xFFFF


class HeadState(data.Struct):
    """The head command and its ``CommandChecker`` code in the precision it sees."""
    valid: 1
    word: COMMAND_BITS
    error: 3


class UnitBusy(data.Struct):
    """Which units hold a command (PL: a PRELOAD until its last PE weight is written; its issue slot.
    EX: its issue slot; a COMPUTE draining; one draining besides the last one that left the issue slot.
    ACT: a row in flight; reading accumulator rows)."""
    ld: 1
    pl: 1
    pl_issue: 1
    ex_issue: 1
    ex_drain: 1
    ex_older: 1
    act: 1
    act_read: 1
    st: 1


class UnitStart(data.Struct):
    """Dispatch pulses: the head command starts on this unit this cycle (``config``: CONFIG loads;
    ``discard``: with ``ld``, a rejected command whose data-in LD consumes and drops)."""
    ld: 1
    pl: 1
    ex: 1
    act: 1
    st: 1
    config: 1
    discard: 1


_LOAD_OPS = (Opcode.LOAD, Opcode.LOAD_BIAS, Opcode.LOAD_LUT, Opcode.LOAD_QUANT)
_BARRIER_OPS = (Opcode.CONFIG, Opcode.FENCE, Opcode.COUNTERS)


def _codes_layout(config: NpuConfig):
    return data.ArrayLayout(codes_layout(config), len(config.precisions))


class Dispatcher(wiring.Component):
    """Members
    -------
    head : In(HeadState)
        The head register (held by ``hdl/top.py``).
    cmd_word : In(COMMAND_BITS); cmd_codes : Out(ArrayLayout(codes_layout(config), len(precisions)))
        A command entering the pre-head register and, in each configured precision, its
        ``CommandChecker.codes`` (its code were its opcode each of the configuration's).
    next_word : In(COMMAND_BITS); next_codes : In(ArrayLayout(codes_layout(config), len(precisions)))
        The command in the pre-head register with its registered codes.
    next_head : Out(HeadState)
        What the head becomes if it loads ``next_word`` at the end of this cycle: valid only in cycles
        in which it may load (the head is empty, or it is consumed and the core runs).
    busy : In(UnitBusy)
    ex_issue_ends, pl_issue_ends, ld_issue_ends : In(1)
        EX's / PL's issue slot frees, LD takes its last beat, at the end of this cycle (a COMPUTE /
        PRELOAD / LOAD may dispatch in it).
    start : Out(UnitStart); consume : Out(1)
        The head dispatches on a unit / is dispatched or rejected this cycle.
    precision : Out(2)
        The CONFIG precision (``golden.isa.Precision``), loaded when a CONFIG dispatches.
    error : Out(3); rejected : Out(16)
        Sticky first error code and the rejected-command count (saturates at 65535).
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        codes = _codes_layout(config)
        super().__init__({
            "head": In(HeadState), "cmd_word": In(COMMAND_BITS), "cmd_codes": Out(codes),
            "next_word": In(COMMAND_BITS), "next_codes": In(codes), "next_head": Out(HeadState),
            "busy": In(UnitBusy), "ex_issue_ends": In(1), "pl_issue_ends": In(1), "ld_issue_ends": In(1),
            "start": Out(UnitStart), "consume": Out(1),
            "precision": Out(2, init=Precision.INT8), "error": Out(3), "rejected": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        precisions = [Precision.from_label(p) for p in c.precisions]

        # -- check a cycle ahead: one checker per configured precision ------------------------------
        for i, p in enumerate(precisions):
            m.submodules[f"checker_{p.label}"] = checker = CommandChecker(c)
            m.d.comb += [checker.word.eq(self.cmd_word), checker.precision.eq(p),
                         self.cmd_codes[i].eq(checker.codes)]

        head, busy = self.head, self.busy
        opcode = head.word[:4]
        config_view = data.View(command_layout(Opcode.CONFIG), head.word)
        wait = head.word[WAIT_FIELD.offset:WAIT_FIELD.offset + WAIT_FIELD.width]

        # A command behind the head loads only when the head is empty or leaves, and a valid error-free
        # head leaves only by dispatching: the precision the next head sees assumes that it does.
        leaving_config = head.valid & (head.error == 0) & (opcode == Opcode.CONFIG)
        next_precision = Mux(leaving_config, config_view.precision, self.precision)
        next_opcode = self.next_word[:4]
        next_error = select_code(c, next_opcode, self.next_codes[0])
        for i, p in enumerate(precisions[1:], start=1):
            next_error = Mux(next_precision == p, select_code(c, next_opcode, self.next_codes[i]), next_error)
        m.d.comb += [self.next_head.valid.eq(1), self.next_head.word.eq(self.next_word),
                     self.next_head.error.eq(next_error)]

        # -- dispatch ---------------------------------------------------------------------------------
        ex_busy = busy.ex_issue | busy.ex_drain
        def waits(token):
            return (wait & int(token)).any()
        blocked = ((waits(Wait.LD) & busy.ld) | (waits(Wait.PL) & busy.pl) | (waits(Wait.EX) & ex_busy)
                   | (waits(Wait.EX_OLDER) & ((busy.ex_issue & busy.ex_drain) | busy.ex_older))
                   | (waits(Wait.ACT) & busy.act) | (waits(Wait.ST) & busy.st))
        all_idle = ~(busy.as_value().any())
        ld_free = ~busy.ld | self.ld_issue_ends
        # Wait.STREAM: cycles since each source unit's last dispatch, saturating at its delay.
        started = {Unit.LD: self.start.ld, Unit.EX: self.start.ex}
        ready = {}
        for source, delay in stream_delay(c.rows, c.cols).items():
            if delay <= 1:                       # (the head dispatches a cycle after the command before)
                ready[source] = C(1)
                continue
            age = Signal(range(delay + 1), init=delay, name=f"{source.name.lower()}_age")
            with m.If(started[source]):
                m.d.sync += age.eq(1)
            with m.Elif(age != delay):
                m.d.sync += age.eq(age + 1)
            ready[source] = age == delay
        streaming = waits(Wait.STREAM)

        def streamed(unit):
            return ~streaming | ready[STREAM_SOURCE[unit]]
        can = Signal()
        unit = Signal(UnitStart)
        with m.Switch(opcode):
            with m.Case(*_BARRIER_OPS):
                m.d.comb += can.eq(all_idle)
                m.d.comb += [unit.config.eq(opcode == Opcode.CONFIG), unit.st.eq(opcode == Opcode.COUNTERS)]
            with m.Case(*_LOAD_OPS):
                m.d.comb += [can.eq(ld_free & ~blocked), unit.ld.eq(1)]
            with m.Case(Opcode.PRELOAD):
                m.d.comb += [can.eq((~busy.pl_issue | self.pl_issue_ends) & ~blocked & streamed(Unit.PL)), unit.pl.eq(1)]
            with m.Case(Opcode.COMPUTE):
                m.d.comb += [can.eq((~busy.ex_issue | self.ex_issue_ends) & ~blocked & streamed(Unit.EX)),
                             unit.ex.eq(1)]
            with m.Case(Opcode.ACTIVATE):
                m.d.comb += [can.eq(~busy.act_read & ~blocked & streamed(Unit.ACT)), unit.act.eq(1)]
            with m.Case(Opcode.STORE):
                m.d.comb += [can.eq(~busy.st & ~blocked), unit.st.eq(1)]
        # A rejected command with data-in (``golden.checks.data_in_beats``) waits for LD and hands it the
        # beats to drop; any other is rejected at once.
        load_view = data.View(command_layout(Opcode.LOAD), head.word)
        takes_data = data_in_beats(opcode, load_view.buf, load_view.rows, c, HW_OPS) != 0
        dispatch = head.valid & (head.error == 0) & can
        reject = head.valid & (head.error != 0) & (~takes_data | ld_free)
        drop = Signal(UnitStart)
        m.d.comb += [drop.ld.eq(takes_data), drop.discard.eq(takes_data)]
        m.d.comb += [self.consume.eq(dispatch | reject),
                     self.start.eq(Mux(dispatch, unit.as_value(), Mux(reject, drop.as_value(), 0)))]

        with m.If(dispatch & unit.config):
            m.d.sync += self.precision.eq(config_view.precision)
        with m.If(reject):
            with m.If(self.rejected != REJECTED_MAX):
                m.d.sync += self.rejected.eq(self.rejected + 1)
            with m.If(self.error == 0):
                m.d.sync += self.error.eq(head.error)
        return m
