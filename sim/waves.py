"""Signals worth looking at, grouped for the GTKWave save file written beside a waveform."""
from __future__ import annotations

__all__ = ["gtkw_traces"]


def gtkw_traces(top) -> dict:
    """``{group: [signals]}`` for ``Simulator.write_vcd(traces=...)`` from an ``NpuTop``."""
    core = top.core
    engine = core.engine
    ex, pl, ld, wb, st, array = engine.ex, engine.pl, core.ld, core.wb, core.st, engine.array
    if pl is None:                         # output-stationary: weights stream with the activations
        datapath = [array.a_valid, array.a_first, array.a_last, array.a_data, array.w_data, array.drain_row,
                    array.drain_data]
        weight_port, pl_busy = [ex.wgt_rd.addr, ex.wgt_rd.en], []
    else:
        datapath = [array.a_valid, array.a_buf, array.a_data, array.w_en, array.w_row, array.w_buf,
                    array.out_valid, array.out_data]
        weight_port, pl_busy = [pl.wgt_rd.addr, pl.wgt_rd.en], [pl.issue_busy, pl.busy]
    return {
        "host": [top.cmd.valid, top.cmd.ready, top.din.valid, top.din.ready, top.dout.valid, top.dout.ready,
                 top.status.idle, top.status.error],
        "controller": [core.head.valid, core.consume, core.busy, ld.busy, *pl_busy, ex.issue_busy,
                       ex.drain_busy, ex.move, wb.busy, st.busy],
        "array (PE row/col edges)": datapath,
        "SRAM ports": [ex.act_rd.addr, ex.act_rd.en, ex.acc_wr.addr, ex.acc_wr.en, ex.acc_rmw_rd.en,
                       *weight_port, ld.act_wr.en, ld.wgt_wr.en, wb.acc_rd.en, wb.act_wr.en, st.act_rd.en],
        "activation unit": [core.act_fn.i_valid, core.act_fn.o_valid, core.act_fn.o_data],
        "counters": [top.counter_sel, top.counter_beat],
    }
