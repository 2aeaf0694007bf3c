"""Sampling (slide 5): Euler (the report's, 50 steps) and Heun (EDM Algorithm 1, no churn) on the
Karras schedule, with per-sample seeds, optional trajectories and classifier-free guidance.

Sample i starts from sigma_max * N(0, I) drawn from its own generator seeded by ``seeds[i]``;
the solvers are deterministic after that, so a sample does not depend on the batch it is in. On a
CPU every batch is padded to a multiple of ``CPU_ROWS`` rows: oneDNN's fp32 kernels gave a batch
of fewer than 8 rows other last bits (3e-5) than the same rows in a larger batch. On CUDA, cuDNN
and cuBLAS may choose other kernels for other batch shapes: there a seed fixes a sample's image,
not necessarily its last bits (not measured; the FID's draws pad to whole batches,
``sources.SampleSource``, so they do not depend on it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffnb import runtime
from diffnb.data.labels import check_labels, null_like
from diffnb.diffusion import noise
from diffnb.diffusion.precond import Denoiser

SOLVERS = ("euler", "heun")
CPU_ROWS = 8      # CPU batches are padded to a multiple of this many rows (module docstring)


@dataclass
class Trajectory:
    """Per step: the noise level, the current x and the denoised estimate D(x, sigma)."""

    sigmas: list[float] = field(default_factory=list)
    x: list[torch.Tensor] = field(default_factory=list)
    denoised: list[torch.Tensor] = field(default_factory=list)


def sample_seeds(seed: int, n: int) -> list[int]:
    """Per-sample seeds of a grid fixed by one seed."""
    return [seed * 1_000_003 + i for i in range(n)]


def initial_noise(seeds: list[int], *, shape=(1, 32, 32), sigma_max: float = noise.SIGMA_MAX,
                  device=None) -> torch.Tensor:
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                     for s in seeds])
    return (x * sigma_max).to(device)


def guided(den: Denoiser, x: torch.Tensor, *, sigma: float, labels, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: D_null + w (D_class - D_null); w = 1 is plain conditioning."""
    if labels is None or guidance == 1.0:
        return den(x, sigma, labels)
    null = null_like(labels)
    both = den(torch.cat([x, x]), sigma, torch.cat([labels, null]))
    d_cond, d_null = both.chunk(2)
    return d_null + guidance * (d_cond - d_null)


def _solve(den: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, labels, *, solver: str,
           guidance: float, trajectory: Trajectory | None) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = guided(den, x, sigma=s, labels=labels, guidance=guidance)
        d = (x - denoised) / s                                # EDM eq. 3: dx/dsigma
        if trajectory is not None:
            trajectory.sigmas.append(s)
            trajectory.x.append(x.cpu())
            trajectory.denoised.append(denoised.cpu())
        x_next = x + d * (s_next - s)                         # Euler step
        if solver == "heun" and s_next > 0:                   # EDM Alg. 1, 2nd-order correction
            d_next = (x_next - guided(den, x_next, sigma=s_next, labels=labels,
                                      guidance=guidance)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
    return x


def nfe(steps: int, solver: str) -> int:
    """Network evaluations of one sample (Heun: 2 per step but the last)."""
    return steps if solver == "euler" else 2 * steps - 1


def default_batch_size(device) -> int:
    """64 on a CPU (faster than 256 there), 2,048 on CUDA (a 32x32 step is launch-bound)."""
    return 2048 if torch.device(device).type == "cuda" else 64


@torch.no_grad()
def sample(den: Denoiser, *, seeds: list[int], labels=None, steps: int = noise.NUM_STEPS,
           solver: str = "euler", guidance: float = 1.0, sigma_min: float = noise.SIGMA_MIN,
           sigma_max: float = noise.SIGMA_MAX, rho: float = noise.RHO, batch_size: int | None = None,
           amp: bool | None = None, trajectory: Trajectory | None = None,
           progress: bool = False) -> torch.Tensor:
    """Generate ``len(seeds)`` images (N, *den.image_shape), default (N, 1, 32, 32), in [-1, 1]-ish
    model space, on the CPU.

    ``labels``: None (unconditional), class indices 0..9 or, for a model with attributes, 0/1
    attribute rows (N, A), one per seed or one for all.
    ``steps``: the report's 50 unless given (notebooks pass their profile's ``sampler_steps``).
    ``trajectory`` collects every step. ``batch_size``: 64 on a CPU, 2,048 on CUDA.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    dev = next(den.parameters()).device
    batch_size = batch_size or default_batch_size(dev)
    n = len(seeds)
    if labels is not None:
        if not den.class_conditional:
            raise ValueError("this model is not class-conditional: sample it with labels=None")
        labels = check_labels(torch.as_tensor(labels).cpu(), n, device=dev, allow_null=False,
                              num_attributes=getattr(den, "num_attributes", 0))
    amp = runtime.default_amp(dev) if amp is None else amp
    shape = getattr(den, "image_shape", (1, 32, 32))
    sigmas = noise.karras_sigmas(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    was_training = den.training
    den.eval()
    out = []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"sampling {n} ({solver}, {steps} steps)", leave=False)
    multiple = CPU_ROWS if dev.type == "cpu" else 1
    for start in starts:
        stop = min(n, start + batch_size)
        rows = stop - start
        pad = -rows % multiple                     # copies of the last row, dropped below
        x = initial_noise(seeds[start:stop] + seeds[stop - 1:stop] * pad, shape=shape,
                          sigma_max=sigma_max, device=dev)
        lab = None if labels is None else torch.cat(
            [labels[start:stop], labels[stop - 1:stop].expand(pad, *labels.shape[1:])])
        record = trajectory if start == 0 else None
        before = 0 if record is None else len(record.x)
        with runtime.autocast(dev, amp):
            x = _solve(den, x, sigmas, lab, solver=solver, guidance=guidance, trajectory=record)
        if record is not None and pad:
            for k in range(before, len(record.x)):
                record.x[k], record.denoised[k] = record.x[k][:rows], record.denoised[k][:rows]
        out.append(x[:rows].float().cpu())
    den.train(was_training)
    return torch.cat(out)
