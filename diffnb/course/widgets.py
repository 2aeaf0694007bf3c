"""Interactive explorers for the notebooks (ipywidgets).

The picture is a ``widgets.Image`` (PNG bytes) updated in place, which nbval's strict mode and a
real browser both accept; no matplotlib inside ``interactive()``.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from diffnb.course import plots
from diffnb.diffusion import noise


class NoiseExplorer:
    """Slide 3, live: a log-scale slider over sigma redraws ``y + sigma * eps`` for a few images.

    ``eps`` is drawn once (seeded), so moving the slider changes sigma and nothing else.
    """

    def __init__(self, images: torch.Tensor, *, seed: int = 0, sigma: float = 1.0,
                 upscale: int = 4):
        self.y = images.detach().float().cpu()
        self.eps = torch.randn(self.y.shape, generator=torch.Generator().manual_seed(seed))
        self.upscale = upscale
        self.slider = widgets.FloatLogSlider(
            value=sigma, base=10, min=np.log10(noise.SIGMA_MIN), max=np.log10(noise.SIGMA_MAX),
            step=0.01, description="sigma", readout_format=".3g", continuous_update=True,
            layout=widgets.Layout(width="480px"))
        self.label = widgets.Label()
        self.image = widgets.Image(format="png")
        self.slider.observe(self._redraw, names="value")
        self._redraw()

    def noisy(self, sigma: float | None = None) -> torch.Tensor:
        """The images at ``sigma`` (default: the slider's value), in model space."""
        return noise.add_noise(self.y, self.slider.value if sigma is None else sigma,
                               eps=self.eps)

    def render(self, sigma: float | None = None) -> bytes:
        array = plots.grid_array(self.noisy(sigma).clamp(-1, 1), nrow=len(self.y))
        return plots.array_png(array, upscale=self.upscale)

    def _redraw(self, change=None) -> None:
        sigma = self.slider.value
        self.image.value = self.render(sigma)
        self.label.value = f"sigma = {sigma:.3g}"

    def widget(self) -> widgets.VBox:
        return widgets.VBox([self.slider, self.label, self.image])


class ClassSampler:
    """Slide 7, live: pick a class and a seed, see samples of a class-conditional model."""

    def __init__(self, denoiser, *, class_names, n: int = 4, steps: int = 25, seed: int = 0,
                 label: int = 0, upscale: int = 4):
        from diffnb.diffusion import sampling

        self._sample = sampling.sample
        self._seeds = sampling.sample_seeds
        self.denoiser, self.n, self.upscale = denoiser, n, upscale
        self.klass = widgets.Dropdown(options=[(c, i) for i, c in enumerate(class_names)],
                                      value=label, description="class")
        self.seed = widgets.BoundedIntText(value=seed, min=0, max=10**6, description="seed")
        self.steps = widgets.IntSlider(value=steps, min=2, max=100, description="steps")
        self.label = widgets.Label()
        self.image = widgets.Image(format="png")
        for w in (self.klass, self.seed, self.steps):
            w.observe(self._redraw, names="value")
        self._redraw()

    def samples(self) -> torch.Tensor:
        return self._sample(self.denoiser, seeds=self._seeds(self.seed.value, self.n),
                            labels=self.klass.value, steps=self.steps.value)

    def _redraw(self, change=None) -> None:
        array = plots.grid_array(self.samples().clamp(-1, 1), nrow=self.n)
        self.image.value = plots.array_png(array, upscale=self.upscale)
        self.label.value = (f"{self.klass.label}: seed {self.seed.value}, "
                            f"{self.steps.value} Euler steps")

    def widget(self) -> widgets.VBox:
        return widgets.VBox([widgets.HBox([self.klass, self.seed]), self.steps, self.label,
                             self.image])
