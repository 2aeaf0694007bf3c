"""The UNet (diffnb.models.unet): shapes, improved initialisation, class labels, per-sample independence,
training, size."""
from dataclasses import replace

import pytest
import torch

from diffnb import data, models
from diffnb.config import ModelConfig
from diffnb.data import NULL_CLASS
from diffnb.diffusion.precond import Denoiser, coefficients
from diffnb.models.unet import UNet

SIGMA_DATA = 0.66


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(nb_channels=8, channel_mult=(1, 2, 2), num_blocks=1, cond_channels=16, **kw) -> ModelConfig:
    return ModelConfig(arch="unet", nb_channels=nb_channels, num_blocks=num_blocks,
                       cond_channels=cond_channels, channel_mult=channel_mult, **kw)


def test_build_gives_a_class_conditional_unet():
    net = models.build(cfg())
    assert isinstance(net, UNet) and net.class_conditional
    assert Denoiser(net, sigma_data=SIGMA_DATA).class_conditional
    with pytest.raises(ValueError, match="UNet builds arch 'unet'"):
        UNet(ModelConfig(arch="class", nb_channels=8, num_blocks=1, cond_channels=8))


@pytest.mark.parametrize("channel_mult", [(1, 2, 2), (1, 2, 4)])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes(channel_mult, attention, batch, randomise):
    net = randomise(UNet(cfg(channel_mult=channel_mult, attention=attention, num_blocks=2))).eval()
    labels = torch.tensor([0, 9, NULL_CLASS])[:batch]
    out = net(torch.randn(batch, 1, 32, 32), torch.randn(batch), labels)
    assert out.shape == (batch, 1, 32, 32) and torch.isfinite(out).all()


def test_channels_last_bf16_keeps_layout(randomise):
    net = randomise(UNet(cfg(attention=True))).to(memory_format=torch.channels_last).eval()
    layouts = []
    for block in [*net.down, *net.mid, *net.up]:
        block.register_forward_hook(lambda m, args, out: layouts.append(
            out.is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, torch.zeros(2), torch.tensor([0, 3]))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out.float()).all()
    assert layouts and all(layouts), "an op fell back from channels_last"


@pytest.mark.parametrize("attention", [False, True])
def test_zero_init_denoiser_is_c_skip_x(attention):
    den = Denoiser(UNet(cfg(attention=attention)), sigma_data=SIGMA_DATA).eval()
    x = torch.randn(3, 1, 32, 32)
    sigma = torch.tensor([0.1, 1.0, 20.0])
    c_skip = coefficients(sigma, SIGMA_DATA)[0].view(-1, 1, 1, 1)
    torch.testing.assert_close(den(x, sigma, torch.tensor([0, 5, 10])), c_skip * x, rtol=0, atol=0)


def test_without_zero_init_the_output_is_not_zero():
    net = UNet(cfg(zero_init=False)).eval()
    assert net(torch.randn(1, 1, 32, 32), torch.zeros(1)).abs().sum() > 0


def test_class_labels_include_zero_null_and_reject_out_of_range(randomise):
    den = Denoiser(randomise(UNet(cfg(attention=True))), sigma_data=SIGMA_DATA).eval()
    x, sigma = torch.randn(1, 1, 32, 32), torch.tensor([1.0])
    d0, d_null = den(x, sigma, torch.tensor([0])), den(x, sigma, None)
    assert not torch.allclose(d0, d_null), "class 0 (T-shirt/top) must not be 'no class'"
    assert not torch.allclose(d0, den(x, sigma, torch.tensor([1])))
    torch.testing.assert_close(d_null, den(x, sigma, torch.tensor([NULL_CLASS])))
    for bad in (11, -1):
        with pytest.raises(ValueError, match="out of range"):
            den(x, sigma, torch.tensor([bad]))
    with pytest.raises(ValueError, match="2 labels for a batch of 1"):
        den(x, sigma, torch.tensor([0, 1]))


def test_noise_level_changes_the_output(randomise):
    net = randomise(UNet(cfg())).eval()
    x = torch.randn(1, 1, 32, 32)
    assert not torch.allclose(net(x, torch.tensor([-1.0])), net(x, torch.tensor([1.0])))


@pytest.mark.parametrize("attention", [False, True])
def test_samples_are_independent_of_the_rest_of_the_batch(attention, randomise):
    """GroupNorm normalises each image on its own: no batch statistics, in eval or training mode."""
    net = randomise(UNet(cfg(attention=attention)))
    x, c_noise = torch.randn(3, 1, 32, 32), torch.tensor([-1.0, 0.0, 1.5])
    labels = torch.tensor([0, 7, NULL_CLASS])
    for mode in (False, True):
        net.train(mode)
        with torch.no_grad():
            batch = net(x, c_noise, labels)
            alone = torch.cat([net(x[i:i + 1], c_noise[i:i + 1], labels[i:i + 1])
                               for i in range(3)])
        torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors():
    net = UNet(cfg())
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 1, 30, 30), torch.zeros(1))
    with pytest.raises(ValueError, match="3 noise levels for a batch of 2"):
        net(torch.randn(2, 1, 32, 32), torch.zeros(3))
    with pytest.raises(ValueError, match="divisible by 4 heads"):
        UNet(cfg(nb_channels=3, channel_mult=(1, 1, 1), attention=True))


def test_few_steps_on_real_images_reduce_the_loss():
    torch.manual_seed(0)
    den = Denoiser(UNet(cfg(attention=True)), sigma_data=SIGMA_DATA).train()
    test = data.load("test")
    y, labels = data.to_model_space(test.images[:16]), test.labels[:16]
    opt = torch.optim.Adam(den.parameters(), lr=5e-3)

    def fixed_loss():
        with torch.no_grad():
            return den.loss(y, labels, generator=torch.Generator().manual_seed(1)).item()
    before = fixed_loss()
    for step in range(60):
        loss = den.loss(y, labels, generator=torch.Generator().manual_seed(step))
        opt.zero_grad(); loss.backward(); opt.step()
    assert fixed_loss() < 0.6 * before  # 0.39-0.43 over seeds


@pytest.mark.parametrize("config,low,high", [
    (cfg(32, (1, 2, 4), 1, 64), 1.5e6, 3.5e6),
    (cfg(32, (1, 2, 4), 2, 128, attention=True), 3e6, 5e6),
    (cfg(64, (1, 2, 2), 2, 128, attention=True), 5e6, 8e6),
])
def test_parameter_counts_are_sane(config, low, high):
    n = models.count_parameters(UNet(config))
    assert low < n < high, f"{n:,} parameters"
    if not config.attention:
        assert models.count_parameters(UNet(replace(config, attention=True))) > n
