"""Classifier-free guidance (Ho and Salimans 2022): sampling.guided(den, x, sigma=, labels=,
guidance=w) is D_null + w (D_class - D_null).

Every expected value is computed here by hand from separate denoiser calls (one with the labels,
one with the null class) on a random class-conditional model, whose output depends on the label.
Tolerances: the guided call runs the network on a batch twice as large (class and null stacked);
float32 convolutions may then sum in another order, ~1e-6 relative, so 1e-5 (x the guidance
scale where the difference is amplified).
"""
import pytest
import torch

from diffnb.data import NULL_CLASS
from diffnb.diffusion import noise, sampling


def inputs(n=4, sigma_scale=1.0):
    x = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * sigma_scale
    return x, torch.tensor([0, 3, 7, 9][:n])


@pytest.mark.parametrize("sigma", [0.3, 5.0])
@torch.no_grad()
def test_guidance_one_is_plain_conditioning(random_class_model, sigma):
    den = random_class_model
    x, labels = inputs(sigma_scale=sigma)
    torch.testing.assert_close(sampling.guided(den, x, sigma=sigma, labels=labels, guidance=1.0),
                               den(x, sigma, labels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0, 4.0])
@torch.no_grad()
def test_guidance_is_null_plus_w_times_the_class_difference(random_class_model, w):
    den, sigma = random_class_model, 2.0
    x, labels = inputs(sigma_scale=sigma)
    d_class = den(x, sigma, labels)                                   # two separate calls
    d_null = den(x, sigma, torch.full_like(labels, NULL_CLASS))
    assert (d_class - d_null).abs().max() > 1e-2, "the model must depend on the label"
    expected = d_null + w * (d_class - d_null)
    tol = 1e-5 * max(1.0, w)
    torch.testing.assert_close(sampling.guided(den, x, sigma=sigma, labels=labels, guidance=w), expected,
                               rtol=tol, atol=tol)


@torch.no_grad()
def test_guidance_uses_the_null_class_not_class_zero(random_class_model):
    den, sigma = random_class_model, 1.0
    x, labels = inputs(sigma_scale=sigma)
    d_null = den(x, sigma, None)                                      # None = "no class"
    torch.testing.assert_close(den(x, sigma, torch.full_like(labels, NULL_CLASS)), d_null)
    d_zero = den(x, sigma, torch.zeros_like(labels))
    assert (d_zero - d_null).abs().max() > 1e-2, "class 0 (T-shirt/top) is not the null class"
    unguided = sampling.guided(den, x, sigma=sigma, labels=labels, guidance=0.0)  # D_null alone
    torch.testing.assert_close(unguided, d_null, rtol=1e-5, atol=1e-5)
    assert (unguided - d_zero).abs().max() > 1e-2
    assert (unguided - den(x, sigma, labels)).abs().max() > 1e-2
    # without labels there is nothing to guide towards: the unconditional denoiser, any w
    torch.testing.assert_close(sampling.guided(den, x, sigma=sigma, labels=None, guidance=3.0),
                               d_null)


@pytest.mark.parametrize("w", [1.0, 3.0])
@torch.no_grad()
def test_sampler_applies_the_guidance(random_class_model, w):
    """One Euler step from sigma_max to 0 lands exactly on the (guided) denoised estimate:
    x_1 = x_0 + (x_0 - D(x_0)) / sigma_max * (0 - sigma_max) = D(x_0)."""
    den, seeds, labels = random_class_model, [0, 1, 2], torch.tensor([0, 4, 9])
    got = sampling.sample(den, seeds=seeds, labels=labels, steps=1, guidance=w, amp=False)
    x0 = sampling.initial_noise(seeds)
    d_class = den(x0, noise.SIGMA_MAX, labels)
    d_null = den(x0, noise.SIGMA_MAX, torch.full_like(labels, NULL_CLASS))
    expected = d_null + w * (d_class - d_null)
    # x_0 - (x_0 - D) cancels: a few float32 ulps of |x_0| (up to ~300) remain, so 8 ulps.
    atol = 8 * torch.finfo(torch.float32).eps * float(x0.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-5 * w, atol=atol)
    if w != 1.0:
        plain = sampling.sample(den, seeds=seeds, labels=labels, steps=1, guidance=1.0, amp=False)
        assert (got - plain).abs().max() > 1e-2
