"""diffnb.diffusion.noise and diffnb.runtime."""
import json
import math

import pytest
import torch

from diffnb import runtime
from diffnb.diffusion import noise


def test_add_noise_is_y_plus_sigma_eps():
    y, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(noise.add_noise(y, 0.5, eps=eps), y + 0.5 * eps)
    sig = torch.tensor([0.0, 1.0, 2.0])
    out = noise.add_noise(y, sig, eps=eps)
    torch.testing.assert_close(out[0], y[0])
    torch.testing.assert_close(out[2], y[2] + 2 * eps[2])


def test_karras_schedule_endpoints_and_monotone():
    s = noise.karras_sigmas(50)
    assert len(s) == 51 and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002, rel=1e-4)
    assert (s[1:] < s[:-1]).all()
    # larger rho concentrates steps at low noise
    mid7, mid1 = noise.karras_sigmas(50, rho=7)[25], noise.karras_sigmas(50, rho=1)[25]
    assert mid7 < mid1
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        noise.karras_sigmas(0)
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max, got 1.0, 0.5"):
        noise.karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)


@pytest.mark.parametrize("P_mean,P_std", [(noise.P_MEAN, noise.P_STD), (0.4, 0.5)])
def test_training_sigma_distribution_moments(P_mean, P_std):
    """ln(sigma) ~ N(P_mean, P_std^2) (EDM Table 1). Tolerances: 5 standard errors of the sample
    mean (P_std / sqrt(n)) and of the sample std of normal data (P_std / sqrt(2 n)); the clamp to
    [SIGMA_MIN, SIGMA_MAX] in noise.sample_sigma moves ~2e-5 of the default draws, far less."""
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    s = noise.sample_sigma(n, P_mean=P_mean, P_std=P_std, generator=gen)
    assert s.shape == (n,)
    log = s.double().log()
    assert abs(log.mean().item() - P_mean) < 5 * P_std / math.sqrt(n)
    assert abs(log.std().item() - P_std) < 5 * P_std / math.sqrt(2 * n)
    assert s.min() >= noise.SIGMA_MIN and s.max() <= noise.SIGMA_MAX
    # the median of a log-normal is exp(P_mean); the sample median's standard error in ln
    # space is sqrt(pi / 2) P_std / sqrt(n)
    median_se = math.sqrt(math.pi / 2) * P_std / math.sqrt(n)
    assert abs(math.log(s.median().item()) - P_mean) < 5 * median_se


def test_profile_parsing(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")
    assert runtime.profile().name == "full" and runtime.profile().fid_report_per_class == 64
    monkeypatch.setenv(runtime.PROFILE_ENV, " Quick ")
    assert runtime.profile().name == "quick"
    monkeypatch.setenv(runtime.PROFILE_ENV, "fast")
    with pytest.raises(ValueError, match="not a profile.*full.*quick"):
        runtime.profile()
    monkeypatch.delenv(runtime.PROFILE_ENV)
    assert runtime.profile().name == ("cpu" if runtime.kept_complete("cpu") else "quick")


def test_the_default_profile_is_cpu_once_its_weights_are_all_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    assert runtime.profile().name == "quick"                     # no weights/cpu/
    manifest = tmp_path / "weights" / "cpu" / "MANIFEST.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"files": {}, "complete": false}')       # some models, not all
    assert runtime.profile().name == "quick"
    manifest.write_text('{"files": {}, "complete": true}')
    assert runtime.profile().name == "cpu"
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")               # full only when asked
    assert runtime.profile().name == "full"


def test_misspelled_profile_names_the_variable_value_and_choices(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "quik")
    with pytest.raises(ValueError) as err:
        runtime.profile()
    assert str(err.value).startswith(
        f"DIFFNB_PROFILE='quik' is not a profile; use one of {sorted(runtime.PROFILES)} "
        "(or unset it")
    assert {"full", "quick"} <= set(runtime.PROFILES)


@pytest.mark.parametrize("value,message", [
    ("cdua", "DIFFNB_DEVICE='cdua' is not a device; use one of cpu, cuda, cuda:N (N = a GPU index) "
             "or mps (or unset it to use the best device available)."),
    ("cpu:x", "DIFFNB_DEVICE='cpu:x' is not a device; use one of cpu, cuda"),
    ("meta", "DIFFNB_DEVICE='meta' is not supported by diffnb; use one of cpu, cuda"),
])
def test_misspelled_device_names_the_variable_value_and_choices(monkeypatch, value, message):
    monkeypatch.setenv(runtime.DEVICE_ENV, value)
    with pytest.raises(ValueError) as err:
        runtime.device()
    assert str(err.value).startswith(message)


def test_absent_gpu_is_a_clear_error(monkeypatch):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.setenv(runtime.DEVICE_ENV, f"cuda:{n}")     # one more GPU than there is
    with pytest.raises(ValueError, match=rf"DIFFNB_DEVICE='cuda:{n}' but "
                       r"(CUDA is not available here|this machine has \d+ CUDA device)"):
        runtime.device()
    monkeypatch.setenv(runtime.DEVICE_ENV, " CPU ")
    assert runtime.device() == torch.device("cpu")


def test_a_device_argument_overrides_the_variable_and_is_checked_alike(monkeypatch):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cdua")           # not read when a device is given
    assert runtime.device("CPU") == runtime.device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.delenv(runtime.DEVICE_ENV)
    assert runtime.device("") == runtime.device(None) == runtime.device()
    with pytest.raises(ValueError, match=r"device='cdua' is not a device; use one of cpu, cuda"
                       r".*\(or pass device=None"):
        runtime.device("cdua")
    with pytest.raises(ValueError, match="device='meta' is not supported by diffnb"):
        runtime.device(torch.device("meta"))
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=rf"device='cuda:{n}' but "):
        runtime.device(f"cuda:{n}")


def test_quick_profile_writes_under_quick(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "quick")
    assert runtime.output_dir("figures").name == "quick"
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")
    assert runtime.output_dir("figures").name == "figures"
    with pytest.raises(ValueError, match="unknown output kind 'elsewhere'; use 'figures' or"):
        runtime.output_dir("elsewhere")


def test_device_override_and_seed(monkeypatch):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.device() == torch.device("cpu")
    a = runtime.seed_everything(3); x = torch.randn(3)
    b = runtime.seed_everything(3); y = torch.randn(3)
    assert torch.equal(x, y)
    assert torch.equal(torch.randn(2, generator=a), torch.randn(2, generator=b))


def test_bf16_autocast_only_where_it_is_faster(monkeypatch, tmp_path):
    """On a CPU the default follows runtime.cpu_bf16_fast (AMX: yes; AVX2 only: no, bf16 is
    emulated; AVX-512 BF16 alone: measured); CUDA always gets bf16."""
    assert runtime.default_amp(torch.device("cuda")) is True
    assert runtime.default_amp(torch.device("meta")) is False
    monkeypatch.setattr(runtime, "cpu_bf16_fast", lambda: False)
    assert runtime.default_amp(torch.device("cpu")) is False
    monkeypatch.setattr(runtime, "cpu_bf16_fast", lambda: True)
    assert runtime.default_amp("cpu") is True
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert {"avx512_bf16", "avx2"} <= runtime.cpu_flags(str(info))
    assert "amx_bf16" not in runtime.cpu_flags(str(info))
    info.write_text("flags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n")
    assert "amx_bf16" in runtime.cpu_flags(str(info))
    assert runtime.cpu_flags(str(tmp_path / "absent")) == set()


def test_bf16_on_a_cpu_is_decided_by_its_units_then_by_measurement(monkeypatch):
    from diffnb import hardware

    def decide(flags, speedup):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(hardware, "_bf16_speedup", lambda: speedup)
        hardware.cpu_bf16_fast.cache_clear()
        try:
            return hardware.cpu_bf16_fast()
        finally:
            hardware.cpu_bf16_fast.cache_clear()
    assert decide({"avx2", "avx512_bf16", "amx_bf16"}, 0.5) is True       # AMX: not measured
    assert decide({"avx2"}, 5.0) is False                                  # emulated
    assert decide({"avx2", "avx512_bf16"}, 2.0) is True                    # a Zen 4 EPYC
    assert decide({"avx2", "avx512_bf16"}, 0.63) is False                  # a Xeon without AMX
    with torch.no_grad():                                 # first asked inside sampling
        assert hardware._bf16_speedup() > 0


def test_the_cpu_model_names_its_bf16_units(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert runtime.cpu_model(str(info)).startswith("AMD EPYC (family 25 model 17; AVX-512 BF16;")


def test_cudnn_autotuner_is_set_for_cuda_runs_only(monkeypatch):
    """The flag is a plain attribute: settable without a GPU, so the rule is checked here."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    runtime.autotune(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    runtime.autotune(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    runtime.autotune("cuda:0", on=False)
    assert torch.backends.cudnn.benchmark is False


def test_a_saved_table_has_its_three_files_and_a_path_relative_to_the_repository(tmp_path,
                                                                                   monkeypatch):
    import pandas as pd

    from diffnb import results
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    with runtime.using_profile(runtime.PROFILES["tiny"]):
        csv = results.save_table(pd.DataFrame({"n": [4, 8], "FID": [243.21, 190.0]}), "s08_test",
                                 meta={"seed": 3})
        assert results.relative(csv) == "results/tiny/s08_test.csv"
    assert csv.read_text().splitlines() == ["n,FID", "4,243.21", "8,190.0"]
    assert "| 243.21 |" in csv.with_suffix(".md").read_text()
    meta = json.loads(csv.with_suffix(".json").read_text())
    assert meta["seed"] == 3 and meta["rows"] == 2 and meta["profile"] == "tiny"
    assert meta["commit"] == runtime.code_commit() and meta["torch"] == torch.__version__
    assert results.relative(tmp_path.parent / "elsewhere.csv") == "elsewhere.csv"
