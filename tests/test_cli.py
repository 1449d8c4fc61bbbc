"""The ``opennpu`` CLI: JSON reports, verification, one-line errors with exit code 2."""
import json

import pytest

from opennpu.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_gemm_golden_json(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "100", "--k", "70", "--n", "33", "--array", "8x8",
                       "--backend", "golden", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] is True
    for key in ("backend", "array", "shape", "cycles", "busy_cycles", "macs", "utilization", "energy_pj",
                "counters", "wall_s"):
        assert key in report
    assert report["macs"] == 100 * 70 * 33
    assert report["utilization"] == pytest.approx(report["macs"] / (report["cycles"] * 64))


def test_gemm_pysim_small(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "6", "--k", "5", "--n", "3", "--array", "2x2", "--backend",
                       "pysim", "--act", "relu", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["checks"]["golden_counters"]


def test_gemm_output_stationary_pysim(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "5", "--k", "6", "--n", "3", "--array", "2x2", "--dataflow", "os",
                       "--backend", "pysim", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["dataflow"] == "os" and report["checks"]["golden_counters"]


@pytest.mark.parametrize("argv, message", [
    (["--m", "0", "--k", "2", "--n", "2"], "dimension m"),
    (["--m", "2", "--k", "2", "--n", "2", "--array", "8by8"], "RxC"),
    (["--m", "2", "--k", "2", "--n", "2", "--array", "0x4"], "rows"),
])
def test_gemm_bad_input(capsys, argv, message):
    code, out, err = run(capsys, "gemm", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_unknown_choice_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gemm", "--m", "2", "--k", "2", "--n", "2", "--act", "swish"])
    assert exit_info.value.code == 2


def test_export_verilog(tmp_path, capsys):
    path = tmp_path / "npu.v"
    code, out, _ = run(capsys, "export", "--array", "2x2", "-o", str(path), "--json")
    assert code == 0 and json.loads(out)["array"] == "2x2"
    text = path.read_text()
    assert "module opennpu_top" in text and "endmodule" in text


def test_sim_writes_vcd_and_gtkw(tmp_path, capsys):
    vcd = tmp_path / "run.vcd"
    code, _, _ = run(capsys, "sim", "--m", "3", "--k", "2", "--n", "2", "--array", "2x2", "--vcd", str(vcd))
    assert code == 0
    assert vcd.stat().st_size > 1000
    gtkw = (tmp_path / "run.gtkw").read_text()
    assert "controller" in gtkw and "array" in gtkw
