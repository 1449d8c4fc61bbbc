"""Command decoding and validation in hardware, generated from the ISA tables in ``golden/``.

``command_layout(op)`` gives a ``data.FlexibleLayout`` over the 128-bit command word whose fields sit
exactly where ``isa.FIELDS`` puts them, so encoder, golden model and RTL cannot drift apart.
``CommandChecker`` evaluates the same per-opcode rules as ``golden.checks.validate``
(``golden.checks.rules``) on those fields, combinationally, for every opcode at once;
``select_code`` picks the word's own code by its opcode.
"""
from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.checks import rules
from opennpu.golden.isa import COMMAND_BITS, FIELDS, ErrorCode, Opcode, reserved_mask

__all__ = ["HW_OPS", "command_layout", "checker_ops", "codes_layout", "select_code", "CommandChecker"]

#: ``ops`` of the ``golden.checks`` rules for Amaranth values.
HW_OPS = SimpleNamespace(select=Mux, all=lambda *conds: Cat(*conds).all(), any=lambda *conds: Cat(*conds).any())


def command_layout(op: Opcode) -> data.FlexibleLayout:
    """Layout of a command word for opcode ``op``: ``opcode`` plus the opcode's fields."""
    fields = {"opcode": data.Field(unsigned(4), 0)}
    for f in FIELDS[op]:
        fields[f.name] = data.Field(signed(f.width) if f.signed else unsigned(f.width), f.offset)
    return data.FlexibleLayout(COMMAND_BITS, fields)


#: Bits of an ``ErrorCode``.
CODE_BITS = max(ErrorCode).bit_length()


def checker_ops(config: NpuConfig) -> list:
    """The opcodes the configuration implements, in the order of ``CommandChecker.codes``."""
    return list(rules(config))


def codes_layout(config: NpuConfig) -> data.ArrayLayout:
    """``CommandChecker.codes``: one ``ErrorCode`` per opcode of ``checker_ops(config)``."""
    return data.ArrayLayout(CODE_BITS, len(checker_ops(config)))


def select_code(config: NpuConfig, opcode, codes):
    """The ``ErrorCode`` of a word with opcode ``opcode`` from its ``CommandChecker.codes``:
    ``BAD_OPCODE`` for an opcode the configuration does not implement (a 4-bit multiplexer)."""
    ops = checker_ops(config)
    table = [codes[ops.index(op)] if op in ops else C(ErrorCode.BAD_OPCODE, CODE_BITS) for op in range(16)]
    return Cat(*table).word_select(opcode, CODE_BITS)


class CommandChecker(wiring.Component):
    """Validates a command word (purely combinational), in two parts that may sit in different cycles.

    Members
    -------
    word : In(128)
        The raw command word.
    precision : In(2)
        The CONFIG precision it is checked in (decides the K depth of a weight tile and the words a
        stream reads).
    codes : Out(codes_layout(config))
        For each opcode of ``checker_ops(config)``: the ``ErrorCode`` the word gets if that is its
        opcode. OK, or the first failing check in the order reserved bits, precision, field values,
        address ranges (the order ``golden.checks.validate`` uses). Every comparison and carry chain
        of the rules is here; ``select_code(config, word[:4], codes)`` (a multiplexer on the opcode,
        which may read registered codes a cycle later) completes the check.
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        super().__init__({"word": In(COMMAND_BITS), "precision": In(2), "codes": Out(codes_layout(config))})

    def elaborate(self, platform):
        m = Module()
        word = self.word
        for i, (op, rule) in enumerate(rules(self._config).items()):
            precision_ok, field_ok, range_ok = (
                Value.cast(ok) for ok in rule(data.View(command_layout(op), word), self.precision,
                                              self._config, HW_OPS))
            with m.If((word & reserved_mask(op)).any()):
                m.d.comb += self.codes[i].eq(ErrorCode.BAD_FIELD)
            with m.Elif(~precision_ok):
                m.d.comb += self.codes[i].eq(ErrorCode.BAD_PRECISION)
            with m.Elif(~field_ok):
                m.d.comb += self.codes[i].eq(ErrorCode.BAD_FIELD)
            with m.Elif(~range_ok):
                m.d.comb += self.codes[i].eq(ErrorCode.BAD_RANGE)
        return m
