"""The NPU on a board: a PLL for the core clock and the NPU behind a UART host link.

``UartNpu`` is platform-independent (the pysim test drives its serial lines bit by bit);
``BoardTop`` adds what a real board needs: the PLL (ECP5 ``EHXPLLL`` / iCE40 ``SB_PLL40_PAD``), a reset
held until the PLL locks, the UART pins and two status LEDs.
"""
from amaranth import *
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth.hdl import ResetInserter

from opennpu.config import NpuConfig

from .host_link import HostLink
from .top import NpuTop
from .uart import UartRx, UartTx

__all__ = ["LinkNpu", "UartNpu", "BoardTop", "ecp5_pll", "ice40_pll"]


class LinkNpu(wiring.Component):
    """``NpuTop`` behind ``HostLink``, at byte level: the link's byte streams are the ports.

    ``UartNpu`` puts a UART in front of it; the Verilator fault campaign (``sim/verilator_link.py``)
    drives its byte streams directly, bypassing only the UART's bit timing.

    Members
    -------
    rx : In(stream.Signature(8)); tx : Out(stream.Signature(8))
        Received bytes, bytes to transmit.
    rx_overrun, rx_framing_error : In(1)
        The receiver's sticky flags (reported in the STATUS reply).
    idle, error : Out(1)
        The NPU is idle; its sticky error code is not OK.
    """

    def __init__(self, config: NpuConfig, *, frame_max: int = 512, timeout: int = 2560):
        self._config = config
        self.npu = NpuTop(config)
        self.link = HostLink(config, frame_max=frame_max, timeout=timeout)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "rx_overrun": In(1), "rx_framing_error": In(1), "idle": Out(1), "error": Out(1)})

    @property
    def config(self) -> NpuConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        npu, link = self.npu, self.link
        m.submodules.npu = ResetInserter(link.npu_reset)(npu)
        m.submodules.link = link
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        wiring.connect(m, link.cmd, npu.cmd)
        wiring.connect(m, link.din, npu.din)
        wiring.connect(m, npu.dout, link.dout)
        m.d.comb += [
            link.npu_status.eq(npu.status), npu.counter_sel.eq(link.counter_sel), link.counter_beat.eq(npu.counter_beat),
            link.rx_overrun.eq(self.rx_overrun), link.rx_framing_error.eq(self.rx_framing_error),
            self.idle.eq(npu.status.idle), self.error.eq(npu.status.error != 0),
        ]
        return m


class UartNpu(wiring.Component):
    """``LinkNpu`` (``NpuTop`` behind ``HostLink``) behind an 8N1 UART (``divisor`` clock cycles per bit).

    Members
    -------
    rx : In(1, init=1); tx : Out(1, init=1)
        The serial lines (``rx`` is asynchronous).
    idle, error : Out(1)
        The NPU is idle; its sticky error code is not OK (for LEDs).
    """

    def __init__(self, config: NpuConfig, *, divisor: int, frame_max: int = 512, timeout: int | None = None):
        self._config = config
        self.core = LinkNpu(config, frame_max=frame_max,
                            timeout=timeout if timeout is not None else 64 * 10 * divisor)
        self.npu, self.link = self.core.npu, self.core.link
        self.uart_rx, self.uart_tx = UartRx(divisor), UartTx(divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "idle": Out(1), "error": Out(1)})

    @property
    def config(self) -> NpuConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        core, urx, utx = self.core, self.uart_rx, self.uart_tx
        m.submodules.core = core
        m.submodules.uart_rx = urx
        m.submodules.uart_tx = utx
        wiring.connect(m, urx.o, core.rx)
        wiring.connect(m, core.tx, utx.i)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            core.rx_overrun.eq(urx.overrun), core.rx_framing_error.eq(urx.framing_error),
            self.idle.eq(core.idle), self.error.eq(core.error),
        ]
        return m


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """``EHXPLLL`` dividers for ``f_out`` from ``f_in`` (Hz), closest achievable; returns the dividers
    and the achieved frequency. PFD 3.125..400 MHz, VCO 400..800 MHz (ECP5 data sheet)."""
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            for clkop in range(1, 129):
                vco = out * clkop
                if 400e6 <= vco <= 800e6 and (best is None or abs(out - f_out) < abs(best["f_out"] - f_out)):
                    best = {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "f_out": out}
    if best is None:
        raise ValueError(f"no ECP5 PLL setting reaches {f_out / 1e6:.3f} MHz from {f_in / 1e6:.3f} MHz")
    return best


def ice40_pll(f_in: float, f_out: float) -> dict:
    """``SB_PLL40`` (SIMPLE feedback) dividers like ``icepll``: PFD 10..133 MHz, VCO 533..1066 MHz."""
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if best is None or abs(out - f_out) < abs(best["f_out"] - f_out):
                    best = {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "f_out": out, "pfd": pfd}
    if best is None:
        raise ValueError(f"no iCE40 PLL setting reaches {f_out / 1e6:.3f} MHz from {f_in / 1e6:.3f} MHz")
    # FILTER_RANGE by PFD frequency (icepll).
    pfd = best.pop("pfd")
    best["FILTER_RANGE"] = next(i for i, hi in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 133e6, 1e12)) if pfd < hi) + 1
    return best


class BoardTop(Elaboratable):
    """``UartNpu`` on an ECP5 (ULX3S) or iCE40 (iCEBreaker) board.

    Parameters
    ----------
    config : NpuConfig
    clk_freq : float or None
        Core clock in Hz, made by the PLL from the board oscillator; ``None`` runs from the oscillator.
    baud : int
        UART line rate. ``clk_freq / baud`` (rounded) clock cycles per bit, at least 4.
    frame_max : int
        Host-link frame buffer size (bytes).
    """

    def __init__(self, config: NpuConfig, *, clk_freq: float | None = None, baud: int = 115_200,
                 frame_max: int = 512):
        self._config = config
        self._clk_freq = clk_freq
        self._baud = baud
        self._frame_max = frame_max
        self.pll = None                 # the PLL settings used by the last elaboration

    @property
    def config(self) -> NpuConfig:
        return self._config

    def core_frequency(self, platform) -> float:
        return self._clk_freq if self._clk_freq is not None else platform.default_clk_frequency

    def elaborate(self, platform):
        from amaranth.vendor import LatticeECP5Platform, SiliconBluePlatform
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        f_in = platform.default_clk_frequency
        f_core = f_in
        locked = Signal(init=1)
        clk_pin = platform.request(platform.default_clk, dir="-")
        if self._clk_freq is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.d.comb += cd_sync.clk.eq(clk_buf.i)
        elif isinstance(platform, LatticeECP5Platform):
            self.pll = p = ecp5_pll(f_in, self._clk_freq)
            f_core = p["f_out"]
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{f_core / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, o_CLKOP=cd_sync.clk, i_CLKFB=cd_sync.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        elif isinstance(platform, SiliconBluePlatform):
            self.pll = p = ice40_pll(f_in, self._clk_freq)
            f_core = p["f_out"]
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked)
        else:
            raise ValueError(f"no PLL support for {type(platform).__name__}")
        # No explicit constraint on the core clock: nextpnr derives it from the oscillator's through
        # the PLL dividers ("Derived frequency constraint of ... MHz").
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        divisor = round(f_core / self._baud)
        if divisor < 4:
            raise ValueError(f"baud {self._baud} is too fast for a {f_core / 1e6:g} MHz clock "
                             f"(needs at least 4 cycles per bit)")
        m.submodules.npu = npu = UartNpu(self._config, divisor=divisor, frame_max=self._frame_max,
                                         timeout=max(1000, int(f_core * 0.05)))
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [npu.rx.eq(rx_buf.i), tx_buf.o.eq(npu.tx)]
        leds = [platform.request("led", i, dir="-") for i in range(2)]
        for i, (led, value) in enumerate(zip(leds, (npu.idle, npu.error))):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", led)
            m.d.sync += buf.o.eq(value)          # (registered: no path from the NPU's state to a pin)
        return m
