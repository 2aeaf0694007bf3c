"""What the benchmarks' numbers mean: FLOPs counted right, both training loops training the same
model on the same data, and the two FID feature extractors agreeing. No timing is asserted."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffnb import config, data, models, runtime
from diffnb.run import flops

ROOT = Path(__file__).resolve().parent.parent


def _module(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script, *args):
    """Run a benchmark on this checkout's diffnb (PYTHONPATH), whatever is installed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


class KnownLayers(nn.Module):
    """Called like a denoiser network, F(x, c_noise, labels): layers with known FLOP counts."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)                     # 32x32 out
        self.conv2 = nn.Conv2d(6, 4, 5, stride=2, padding=2)           # 16x16 out
        self.conv3 = nn.Conv2d(4, 8, 3, padding=1, groups=2)           # 16x16 out, 2 groups
        self.per_pixel = nn.Linear(8, 5)                               # on 16 x 16 positions
        self.linear = nn.Linear(5, 3)                                  # on one vector

    def forward(self, x, c_noise, labels=None):
        h = self.conv3(self.conv2(self.conv1(x)))
        h = self.per_pixel(h.flatten(2).transpose(1, 2))               # (1, 256, 5)
        return self.linear(h.mean(1))


def test_flop_count_of_known_layers_is_the_closed_form():
    # conv: 2 k^2 (Cin / groups) Cout H_out W_out per image (a multiply and an add per weight
    # and output pixel); linear: 2 in out per vector it is applied to.
    expected = (2 * 3 * 3 * 1 * 6 * 32 * 32
                + 2 * 5 * 5 * 6 * 4 * 16 * 16
                + 2 * 3 * 3 * (4 // 2) * 8 * 16 * 16
                + 2 * 8 * 5 * 16 * 16
                + 2 * 5 * 3)
    assert flops.forward_flops(KnownLayers()) == expected
    assert flops.train_flops(KnownLayers(), 10) == 3 * 10 * expected      # forward + backward
    rgb = OneConv(nn.Conv2d(3, 7, 3, padding=1))                     # 3x64x64 images
    assert flops.forward_flops(rgb, shape=(3, 64, 64)) == 2 * 3 * 3 * 3 * 7 * 64 * 64


class OneConv(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x, c_noise, labels=None):
        return self.conv(x)


def test_naive_loop_sees_the_same_images_as_diffnb():
    """The naive loop's per-image torchvision transforms (ToTensor, Pad(2), Normalize(0.5, 0.5))
    give exactly diffnb's on-device to_model_space."""
    bench = _module("train_speed")
    test = data.test_set().subset(torch.arange(5))
    naive = torch.stack([bench.TransformDataset(test)[i][0] for i in range(5)])
    torch.testing.assert_close(naive, data.to_model_space(test.images), rtol=0, atol=1e-6)
    assert [int(bench.TransformDataset(test)[i][1]) for i in range(5)] == test.labels.tolist()


@pytest.mark.slow
def test_compile_speed_benchmark_times_the_same_step_on_the_same_batches(monkeypatch):
    """Both steps start from the same weights and see the same batch and noise first: their first
    losses agree; the ratio is that of the two rates. (The model and batch of
    test_training_parts' compiled step: torch.compile's cache may serve both.)"""
    bench = _module("compile_speed")
    base = config.get_preset("class_1")
    p = replace(base, model=replace(base.model, nb_channels=8, num_blocks=1, cond_channels=8),
                train=replace(base.train, batch_size=16))
    monkeypatch.setattr(runtime, "default_amp", lambda dev: False)       # fp32: rounding only
    r = bench.compare(p, torch.device("cpu"), steps=2, rounds=1, warmup=1)
    assert r["first_loss"]["compiled"] == pytest.approx(r["first_loss"]["eager"], rel=1e-4)
    assert r["ratio"] == pytest.approx(r["compiled_img_s"] / r["eager_img_s"], abs=0.01)
    assert r["precision"] == "fp32" and r["batch"] == 16


@pytest.mark.slow
def test_train_speed_benchmark_trains_the_same_model_on_the_same_data(tmp_path):
    out = tmp_path / "train_speed.json"
    _run("train_speed.py", "--smoke", "--steps", "1", "--json", str(out))   # 1 timed step is enough
    result = json.loads(out.read_text())
    naive, ours = result["loops"]["naive"], result["loops"]["diffnb"]
    preset = config.get_preset(result["preset"])
    built = models.build(preset.model)
    assert naive["params"] == ours["params"] == sum(p.numel() for p in built.parameters())
    assert naive["model"] == ours["model"] == repr(built)         # same architecture
    assert naive["images"] == ours["images"] == result["steps"] * result["diffnb_batch"]
    assert naive["data"] == ours["data"] == data.COUNTS["train"] - data.VALID_SIZE
    # the printed ratio and FLOP rate are those of these two loops and this model
    assert result["ratio"] == pytest.approx(ours["images_per_second"] / naive["images_per_second"],
                                            abs=0.01)
    train_flops = flops.train_flops(built, 1, labels=preset.model.class_conditional)
    assert result["train_gflop_per_image"] == pytest.approx(train_flops / 1e9, abs=1e-3)


@pytest.mark.slow
def test_fid_speed_benchmark_extractors_agree():
    # 4 images and 256-d Frechet statistics instead of --smoke's 10: the same code paths and
    # checks, ~2.5x less Inception.
    run = _run("fid_speed.py", "--n", "4", "--frechet-dims", "256")
    assert ", 4 PNGs 28x28" in run.stdout
    assert re.search(r"speed ratio diffnb / pytorch-fid: \d+\.\d+x", run.stdout), run.stdout
    diff = float(re.search(r"max abs feature difference: (\S+)", run.stdout).group(1))
    # Both are fp32 on the same network; only memory format and batch split differ, i.e. the
    # summation order: ~1e-6 relative on features of size <~10. The bound of
    # test_fid.test_converted_network_matches_torchscript, 1e-4.
    assert np.isfinite(diff) and diff < 1e-4, run.stdout
    frechet = re.search(r"Frechet distance, 256-d statistics: .*\n.*\(\|difference\| (\S+)\)",
                        run.stdout)
    # Both methods work in float64 on the same statistics (a distance of a few hundred): their
    # results differ by ~1e-10 relative; 1e-4 (1e-6 relative) still catches any method error.
    assert frechet and float(frechet.group(1)) < 1e-4, run.stdout


@pytest.mark.slow
def test_ddp_speed_benchmark_trains_the_same_model_on_the_same_data(tmp_path, monkeypatch):
    """Its 1-process and 2-process runs do the same work: the same model, the same images, and
    the same weights at the end (to tests/test_distributed.py's tolerance), so the printed
    speed-up compares like with like. On the CPU (gloo), whatever the machine has."""
    monkeypatch.setenv("DIFFNB_DEVICE", "cpu")
    out = tmp_path / "ddp_speed.json"
    _run("ddp_speed.py", "--smoke", "--baseline-threads", "1", "--json", str(out))
    result = json.loads(out.read_text())
    base, ddp = result["baseline"], result["ddp"]
    assert (base["processes"], ddp["processes"]) == (1, 2)
    assert base["params"] == ddp["params"] and base["model"] == ddp["model"]
    assert base["images"] == ddp["images"] == result["steps"] * result["global_batch"]
    assert base["data"] == ddp["data"] == data.COUNTS["train"] - data.VALID_SIZE
    assert result["max_weight_difference"] < 5e-5           # the same training
    assert result["ratio"] == pytest.approx(ddp["images_per_second"] / base["images_per_second"],
                                            abs=1e-3)


def test_sample_speed_benchmark_times_the_same_samples(monkeypatch):
    """Every variant draws the same seeds with the same weights: the baseline's ratio is 1 and its
    samples are its own; channels_last and a larger batch change the samples by rounding only."""
    bench = _module("sample_speed")
    base = config.get_preset("class_1")
    p = replace(base, model=replace(base.model, nb_channels=8, num_blocks=1, cond_channels=8))
    monkeypatch.setattr(runtime, "default_amp", lambda dev: False)       # fp32: rounding only
    r = bench.compare(p, torch.device("cpu"), images=16, steps=2, rounds=1, batch=8)
    first, *others = r["variants"].values()
    assert first["ratio"] == 1.0 and first["largest_difference"] == 0.0
    assert [v["batch_size"] for v in (first, *others)] == [8, 8, 16]
    assert all(0 < v["img_s"] and v["largest_difference"] < 1e-3 for v in others)
    assert r["precision"] == "fp32" and r["images_per_round"] == 16
