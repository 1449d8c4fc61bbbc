"""Command decoding and validation in hardware, generated from the one ISA table in ``golden/isa.py``.

``command_layout(op)`` gives a ``data.FlexibleLayout`` over the 128-bit command word whose fields sit
exactly where ``isa.FIELDS`` puts them, so encoder, golden model and RTL cannot drift apart.
``CommandChecker`` computes the error code ``golden.model.validate`` computes, combinationally.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import (COMMAND_BITS, FIELDS, ActFn, Buf, ErrorCode, Opcode, Precision,
                                reserved_mask)
from opennpu.golden.numerics import SHIFT_MAX, SHIFT_MIN

from .common import preload_words, stream_words

__all__ = ["command_layout", "CommandChecker"]


def command_layout(op: Opcode) -> data.FlexibleLayout:
    """Layout of a command word for opcode ``op``: ``opcode`` plus the opcode's fields."""
    fields = {"opcode": data.Field(unsigned(4), 0)}
    for f in FIELDS[op]:
        fields[f.name] = data.Field(signed(f.width) if f.signed else unsigned(f.width), f.offset)
    return data.FlexibleLayout(COMMAND_BITS, fields)


class CommandChecker(wiring.Component):
    """Validates the command in the dispatcher's head register (purely combinational).

    Members
    -------
    word : In(128)
        The raw command word.
    precision : In(2)
        The current CONFIG precision (decides the K depth of a weight tile and the words a stream reads).
    error : Out(3)
        ``ErrorCode``: OK, or the first failing check in the order opcode, reserved bits, precision,
        field values, address ranges (the order ``golden.model.validate`` uses).
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        super().__init__({"word": In(COMMAND_BITS), "precision": In(2), "error": Out(3)})

    def elaborate(self, platform):
        m = Module()
        cfg, word = self._config, self.word
        views = {op: data.View(command_layout(op), word) for op in Opcode}
        depth = {Buf.ACT: cfg.act_depth, Buf.WGT: cfg.wgt_depth, Buf.ACC: cfg.acc_depth}

        def fits(addr, count, limit):
            return (count != 0) & (addr + count <= limit)

        def depth_of(buf):
            return Mux(buf == Buf.ACT, depth[Buf.ACT], Mux(buf == Buf.WGT, depth[Buf.WGT], depth[Buf.ACC]))

        field_ok, range_ok = Signal(init=1), Signal(init=1)
        opcode = word[:4]
        with m.Switch(opcode):
            for op in Opcode:
                if op == Opcode.PRELOAD and cfg.dataflow == "os":
                    continue                         # no PRELOAD in the output-stationary ISA
                with m.Case(op):
                    v = views[op]
                    if op == Opcode.CONFIG:
                        supported = Cat(v.precision == Precision.from_label(p) for p in cfg.precisions).any()
                        precision_ok = Signal()
                        m.d.comb += precision_ok.eq(supported)
                        m.d.comb += field_ok.eq((v.act <= max(ActFn)) & (v.qmin <= v.qmax)
                                                & (v.shift >= SHIFT_MIN) & (v.shift <= SHIFT_MAX))
                    elif op in (Opcode.LOAD, Opcode.STORE):
                        last_buf = Buf.WGT if op == Opcode.LOAD else Buf.ACC
                        m.d.comb += field_ok.eq(v.buf <= last_buf)
                        m.d.comb += range_ok.eq(fits(v.addr, v.rows, depth_of(v.buf)))
                    elif op == Opcode.PRELOAD:
                        k_tile = Mux(self.precision == Precision.A4W4, 2 * cfg.rows, cfg.rows)
                        words = preload_words(self.precision, v.krows)
                        m.d.comb += field_ok.eq((v.krows >= 1) & (v.krows <= k_tile)
                                                & (v.ncols >= 1) & (v.ncols <= cfg.cols))
                        m.d.comb += range_ok.eq(v.addr + words <= cfg.wgt_depth)
                    elif op == Opcode.COMPUTE and cfg.dataflow == "os":
                        words = stream_words(self.precision, v.rows)
                        m.d.comb += field_ok.eq((v.mrows >= 1) & (v.mrows <= cfg.rows)
                                                & (v.ncols >= 1) & (v.ncols <= cfg.cols))
                        m.d.comb += range_ok.eq(fits(v.aaddr, v.rows, cfg.act_depth)
                                                & (v.waddr + words <= cfg.wgt_depth)
                                                & (v.accaddr + v.mrows <= cfg.acc_depth))
                    elif op == Opcode.COMPUTE:
                        m.d.comb += field_ok.eq((v.waddr == 0) & (v.mrows == 0) & (v.ncols == 0))
                        m.d.comb += range_ok.eq(fits(v.aaddr, v.rows, cfg.act_depth)
                                                & (v.accaddr + v.rows <= cfg.acc_depth))
                    elif op == Opcode.ACTIVATE:
                        m.d.comb += range_ok.eq(fits(v.accaddr, v.rows, cfg.acc_depth)
                                                & (v.dest | (v.aaddr + v.rows <= cfg.act_depth)))
                    reserved = (word & reserved_mask(op)).any()
                    with m.If(reserved):
                        m.d.comb += self.error.eq(ErrorCode.BAD_FIELD)
                    if op == Opcode.CONFIG:
                        with m.Elif(~precision_ok):
                            m.d.comb += self.error.eq(ErrorCode.BAD_PRECISION)
                    with m.Elif(~field_ok):
                        m.d.comb += self.error.eq(ErrorCode.BAD_FIELD)
                    with m.Elif(~range_ok):
                        m.d.comb += self.error.eq(ErrorCode.BAD_RANGE)
            with m.Default():
                m.d.comb += self.error.eq(ErrorCode.BAD_OPCODE)
        return m
