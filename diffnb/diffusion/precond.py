"""EDM preconditioning and loss (Karras et al. 2022, Table 1; the course's starter code; slide 4).

D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))
"""
from __future__ import annotations

import torch
from torch import nn

from diffnb.diffusion import noise


def coefficients(sigma: torch.Tensor, sigma_data: float):
    """EDM Table 1: (c_skip, c_out, c_in, c_noise) for a tensor of noise levels."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1.0 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


class Denoiser(nn.Module):
    """Wraps a network F into the preconditioned denoiser D (EDM eq. 7)."""

    def __init__(self, net: nn.Module, *, sigma_data: float):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    @property
    def class_conditional(self) -> bool:
        return getattr(self.net, "class_conditional", False)

    @property
    def num_attributes(self) -> int:
        """0: class labels; > 0: attribute rows of this length (diffnb.models.conditioning)."""
        return getattr(self.net, "num_attributes", 0)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image, what the sampler starts from."""
        return tuple(getattr(self.net, "image_shape", (1, 32, 32)))

    def _coefficients(self, sigma: torch.Tensor, x: torch.Tensor):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        return sigma, [c.view(-1, 1, 1, 1) for c in coefficients(sigma, self.sigma_data)]

    def forward(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma, (c_skip, c_out, c_in, c_noise) = self._coefficients(sigma, x)
        F_x = self.net(c_in * x, c_noise.flatten(), labels)
        return c_skip * x + c_out * F_x.float()

    def draw_noise(self, y: torch.Tensor, *, P_mean: float = noise.P_MEAN,
                   P_std: float = noise.P_STD, generator: torch.Generator | None = None):
        """EDM Table 1's training noise: ln sigma ~ N(P_mean, P_std^2) per image, eps ~ N(0, I)."""
        sigma = noise.sample_sigma(y.shape[0], P_mean=P_mean, P_std=P_std, generator=generator,
                                   device=y.device)
        eps = torch.randn(y.shape, generator=generator,
                          device=generator.device if generator is not None else y.device)
        return sigma, eps.to(y.device)

    def loss_from(self, y: torch.Tensor, sigma: torch.Tensor, *, eps: torch.Tensor,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
        """Slide 4: MSE between F(c_in x, c_noise) and the target (y - c_skip x) / c_out, with
        x = y + sigma eps. Equals EDM's weighted loss lambda(sigma) |D(x) - y|^2 with
        lambda = 1 / c_out^2 (EDM eq. 8 and Table 1). No random draws: ``torch.compile`` can
        take it whole."""
        x = noise.add_noise(y, sigma, eps=eps)
        sigma, (c_skip, c_out, c_in, c_noise) = self._coefficients(sigma, x)
        target = (y - c_skip * x) / c_out
        F_x = self.net(c_in * x, c_noise.flatten(), labels)
        return ((F_x.float() - target) ** 2).mean()

    def loss(self, y: torch.Tensor, labels: torch.Tensor | None = None, *,
             P_mean: float = noise.P_MEAN, P_std: float = noise.P_STD,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`loss_from` with the noise level and noise drawn from ``generator``."""
        sigma, eps = self.draw_noise(y, P_mean=P_mean, P_std=P_std, generator=generator)
        return self.loss_from(y, sigma, eps=eps, labels=labels)
