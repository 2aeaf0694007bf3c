"""diffnb.noise and diffnb.runtime."""
import math

import pytest
import torch

from diffnb import noise, runtime


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
    with pytest.raises(ValueError):
        noise.karras_sigmas(0)
    with pytest.raises(ValueError):
        noise.karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)


def test_training_sigma_distribution_moments():
    s = noise.sample_sigma(200_000, generator=torch.Generator().manual_seed(0))
    assert s.min() >= noise.SIGMA_MIN and s.max() <= noise.SIGMA_MAX
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.01)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.01)
    assert s.median().item() == pytest.approx(math.exp(-1.2), rel=0.02)


def test_profile_parsing(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")
    assert runtime.profile().name == "full" and runtime.profile().fid_report_per_class == 64
    monkeypatch.setenv(runtime.PROFILE_ENV, " Quick ")
    assert runtime.profile().name == "quick"
    monkeypatch.setenv(runtime.PROFILE_ENV, "fast")
    with pytest.raises(ValueError, match="not a profile.*full.*quick"):
        runtime.profile()
    monkeypatch.delenv(runtime.PROFILE_ENV)
    expected = "full" if torch.cuda.is_available() else "quick"
    assert runtime.profile().name == expected


def test_quick_profile_writes_under_quick(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "quick")
    assert runtime.output_dir("figures").name == "quick"
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")
    assert runtime.output_dir("figures").name == "figures"
    with pytest.raises(ValueError):
        runtime.output_dir("elsewhere")


def test_device_override_and_seed(monkeypatch):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.device() == torch.device("cpu")
    a = runtime.seed_everything(3); x = torch.randn(3)
    b = runtime.seed_everything(3); y = torch.randn(3)
    assert torch.equal(x, y) and torch.equal(torch.randn(2, generator=a), torch.randn(2, generator=b))


def test_bf16_autocast_only_where_it_is_native(monkeypatch):
    """bf16 is emulated on CPUs without AVX-512/AMX, and then ~9x slower than fp32 (see
    runtime.default_amp): the default must follow the CPU, and CUDA always gets bf16."""
    assert runtime.default_amp(torch.device("cuda")) is True
    assert runtime.default_amp(torch.device("meta")) is False
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    assert runtime.default_amp(torch.device("cpu")) is False
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    assert runtime.default_amp("cpu") is True
