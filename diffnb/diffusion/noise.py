"""Noise levels: slide 3's noising, the training distribution and the sampling schedule (EDM)."""
from __future__ import annotations

import torch

P_MEAN, P_STD = -1.2, 1.2            # EDM Table 1: ln(sigma) ~ N(P_mean, P_std^2) in training
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
NUM_STEPS = 50                        # the report's sampler


def add_noise(y: torch.Tensor, sigma, *, eps: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Slide 3: x = y + sigma * eps, eps ~ N(0, I); ``sigma`` a number or one value per image."""
    if eps is None:
        eps = torch.randn(y.shape, generator=generator, device=y.device if generator is None
                          else generator.device).to(y.device)
    sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
    if sigma.ndim == 1:
        sigma = sigma.view(-1, *([1] * (y.ndim - 1)))
    return y + sigma * eps


def sample_sigma(n: int, *, P_mean: float = P_MEAN, P_std: float = P_STD,
                 sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training noise levels: sigma = exp(P_mean + P_std * n), n ~ N(0, 1) (EDM Table 1), then
    clamped to [sigma_min, sigma_max], the sampler's range. EDM does not clamp; this is diffnb's
    choice (the course's starter code's), and with the defaults it moves about 2e-5 of draws."""
    gen_device = generator.device if generator is not None else device
    normal = torch.randn(n, generator=generator, device=gen_device)
    sigma = (P_mean + P_std * normal).exp().clamp(sigma_min, sigma_max)
    return sigma.to(device) if device is not None else sigma


def karras_sigmas(num_steps: int = NUM_STEPS, *, sigma_min: float = SIGMA_MIN,
                  sigma_max: float = SIGMA_MAX, rho: float = RHO, device=None) -> torch.Tensor:
    """EDM eq. 5: num_steps decreasing levels from sigma_max to sigma_min, then a final 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    frac = i / max(num_steps - 1, 1)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max ** inv_rho + frac * (sigma_min ** inv_rho - sigma_max ** inv_rho)) ** rho
    if num_steps == 1:
        sigmas = torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)
