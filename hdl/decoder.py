"""Command decoding and validation in hardware, generated from the ISA tables in ``golden/``.

``command_layout(op)`` gives a ``data.FlexibleLayout`` over the 128-bit command word whose fields sit
exactly where ``isa.FIELDS`` puts them, so encoder, golden model and RTL cannot drift apart.
``CommandChecker`` evaluates the same per-opcode rules as ``golden.checks.validate``
(``golden.checks.rules``) on those fields, combinationally.
"""
from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.checks import rules
from opennpu.golden.isa import COMMAND_BITS, FIELDS, ErrorCode, Opcode, reserved_mask

__all__ = ["HW_OPS", "command_layout", "CommandChecker"]

#: ``ops`` of the ``golden.checks`` rules for Amaranth values.
HW_OPS = SimpleNamespace(select=Mux, all=lambda *conds: Cat(*conds).all(), any=lambda *conds: Cat(*conds).any())


def command_layout(op: Opcode) -> data.FlexibleLayout:
    """Layout of a command word for opcode ``op``: ``opcode`` plus the opcode's fields."""
    fields = {"opcode": data.Field(unsigned(4), 0)}
    for f in FIELDS[op]:
        fields[f.name] = data.Field(signed(f.width) if f.signed else unsigned(f.width), f.offset)
    return data.FlexibleLayout(COMMAND_BITS, fields)


class CommandChecker(wiring.Component):
    """Validates a command word (purely combinational).

    Members
    -------
    word : In(128)
        The raw command word.
    precision : In(2)
        The CONFIG precision it is checked in (decides the K depth of a weight tile and the words a
        stream reads).
    error : Out(3)
        ``ErrorCode``: OK, or the first failing check in the order opcode, reserved bits, precision,
        field values, address ranges (the order ``golden.checks.validate`` uses).
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        super().__init__({"word": In(COMMAND_BITS), "precision": In(2), "error": Out(3)})

    def elaborate(self, platform):
        m = Module()
        word = self.word
        with m.Switch(word[:4]):
            for op, rule in rules(self._config).items():
                with m.Case(op):
                    precision_ok, field_ok, range_ok = (
                        Value.cast(ok) for ok in rule(data.View(command_layout(op), word), self.precision,
                                                      self._config, HW_OPS))
                    with m.If((word & reserved_mask(op)).any()):
                        m.d.comb += self.error.eq(ErrorCode.BAD_FIELD)
                    with m.Elif(~precision_ok):
                        m.d.comb += self.error.eq(ErrorCode.BAD_PRECISION)
                    with m.Elif(~field_ok):
                        m.d.comb += self.error.eq(ErrorCode.BAD_FIELD)
                    with m.Elif(~range_ok):
                        m.d.comb += self.error.eq(ErrorCode.BAD_RANGE)
            with m.Default():
                m.d.comb += self.error.eq(ErrorCode.BAD_OPCODE)
        return m
