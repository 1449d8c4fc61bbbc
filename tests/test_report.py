"""``opennpu report`` on the CPU path: files exist and the numbers agree with the counters."""
import json

from opennpu.cli import main
from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import PRECISIONS, NpuConfig
from opennpu.golden.model import GoldenNpu


def test_report_files_and_numbers(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["report", "--gemm", "24x40x16:relu", "--gemm", "8x16x10:sigmoid", "--array", "4x4", "--gpu",
                 "-o", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("report.md", "report.json", "energy_breakdown.png", "precisions.png", "roofline.png"):
        assert (out / name).stat().st_size > 0
    config = NpuConfig(rows=4, cols=4, precisions=PRECISIONS)
    for i, layer in enumerate(report["layers"]):
        m, k, n = layer["shape"]
        act = ("relu", "sigmoid")[i]
        counters = GoldenNpu(config).run(build_gemm(config, random_gemm(m, k, n, "int8", act, seed=i)).program).counters
        assert layer["cycles"] == counters["cycles"] and layer["macs"] == counters["macs"] == m * k * n
        assert abs(sum(layer["energy_breakdown_pj"].values()) - counters["energy_fj"] / 1000) < 1e-6
        assert layer["gpu"]["bit_exact"] is True and layer["gpu"]["latency_us"] > 0
        by_p = report["precisions"][layer["name"]]
        assert by_p["a8w4"]["weight_bytes"] * 2 == by_p["int8"]["weight_bytes"]
    md = (out / "report.md").read_text()
    assert "horowitz" in md and "| gemm0 |" in md
