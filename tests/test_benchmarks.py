"""The benchmarks run (smoke size): they must finish and print their ratio. No timing asserted."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_train_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "train_speed.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--smoke",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ratio diffnb / naive:" in run.stdout
    result = json.loads(out.read_text())
    assert result["naive_img_s"] > 0 and result["diffnb_img_s"] > 0
    assert result["train_gflop_per_image"] > 0


@pytest.mark.slow
def test_fid_speed_benchmark_smoke():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fid_speed.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "speed ratio diffnb / pytorch-fid:" in run.stdout
    assert "max abs feature difference" in run.stdout
