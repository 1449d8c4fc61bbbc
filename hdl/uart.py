"""8N1 UART: a receiver and a transmitter with ``lib.stream`` byte interfaces.

The line idles high; a byte is a start bit (0), eight data bits LSB first and a stop bit (1), each
``divisor`` clock cycles long (``divisor = f_clk / baud``; the simulation test uses 4).
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx"]


def _check_divisor(divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an int, got {divisor!r}")
    if divisor < 4:
        raise ValueError(f"divisor (clock cycles per bit) must be at least 4, got {divisor}")


class UartRx(wiring.Component):
    """8N1 receiver.

    The line goes through a two-flip-flop synchroniser. A falling edge starts a byte; the start bit
    is checked again in its middle (a shorter glitch is ignored) and every later bit is sampled
    ``divisor`` cycles after the previous one, i.e. in its middle.

    Latency: a byte appears on ``o`` 2 cycles after the middle of its stop bit.
    Throughput: back-to-back bytes at the line rate (the receiver hunts for the next start bit right
    after sampling the stop bit).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 4.

    Members
    -------
    rx : In(1)
        The serial line (asynchronous, idles high).
    o : Out(stream.Signature(8))
        Received bytes. The line has no flow control: ``valid`` holds until the byte is taken or the
        next byte completes, which replaces it and sets ``overrun``.
    overrun : Out(1)
        Sticky: a received byte replaced one that was never taken.
    framing_error : Out(1)
        Sticky: a byte had no stop bit (it is dropped).
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "overrun": Out(1), "framing_error": Out(1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(2, init=0b11)                    # synchroniser; line[1] is the sampled level
        m.d.sync += line.eq(Cat(self.rx, line[0]))
        bit = line[1]

        timer = Signal(range(div))
        count = Signal(range(10))                      # bits sampled so far in this byte
        shift = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~bit):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bit):                      # glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), count.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(count == 8):               # the stop bit
                    with m.If(bit):
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], bit)), count.eq(count + 1), timer.eq(div - 1)]
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Latency: the start bit begins 1 cycle after a byte is accepted.
    Throughput: one byte per ``10 * divisor`` cycles (``i.ready`` is high while the line is idle or the
    stop bit of the previous byte is being sent in its last cycle).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 4.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1, init=1)
        The serial line.
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(11))                       # bits left to send, start bit included
        shift = Signal(9, init=0x1FF)                  # next bits, LSB first; stop bit and idle are 1

        last_cycle = (bits == 0) | ((bits == 1) & (timer == 0))
        m.d.comb += self.i.ready.eq(last_cycle)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i.payload, 1)), bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1),
                             timer.eq(div - 1)]
        return m
