"""Image grids and the one helper that saves every figure as ``figures/<slide-id>_<name>.png``.

Each PNG gets a JSON sidecar with its provenance (profile and device always; the seed, sample
count and sampler where the figure samples), and its bytes are reproducible: no timestamp or
software version is written into the file.

What these helpers return shows cleanly as the last expression of a notebook cell: a saved figure
as its path relative to the repository and its provenance in one line (:class:`SavedFigure`),
never an object repr or an absolute path. Tables: :mod:`diffnb.course.tables`.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator, NullFormatter

from diffnb import results, runtime
from diffnb.results import atomic_write

SLIDE_ID = re.compile(r"^s\d{2}$")


def grid_array(images: torch.Tensor, *, nrow: int, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> one (rows*H, nrow*W) or (.., 3) float array in [0, 1]."""
    images = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    out = np.ones((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[:, top:top + h, left:left + w] = images[i].numpy()
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def show_grid(ax, images: torch.Tensor, *, nrow: int, title: str | None = None) -> None:
    ax.imshow(grid_array(images, nrow=nrow), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def grid_figure(images: torch.Tensor, *, nrow: int, title: str | None = None,
                scale: float = 0.45):
    """A figure holding one grid, sized so that each 32x32 image stays legible."""
    rows = -(-len(images) // nrow)
    fig, ax = plt.subplots(figsize=(max(2.0, nrow * scale), max(2.0, rows * scale + 0.4)))
    show_grid(ax, images, nrow=nrow, title=title)
    fig.tight_layout()
    return fig


def labeled_rows_figure(images: torch.Tensor, *, row_labels, title: str | None = None,
                        scale: float = 0.45, col_labels=None):
    """Slide 7: one row per class, the class names on the left; images (rows*cols, C, H, W);
    ``col_labels``: one label under each column (e.g. a guidance scale)."""
    rows = len(row_labels)
    cols = len(images) // rows
    margin = max(1.6, 0.105 * max(len(str(label)) for label in row_labels))  # room for labels
    fig, ax = plt.subplots(figsize=(cols * scale + margin, rows * scale + 0.5))
    if margin > 1.6:
        ax.set_anchor("E")  # long labels: the slack a fixed aspect leaves goes to their side
    ax.imshow(grid_array(images, nrow=cols), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    h, w = images.shape[-2] + 2, images.shape[-1] + 2
    ax.set_yticks([2 + h * r + (h - 2) / 2 for r in range(rows)], list(row_labels))
    ax.set_xticks([2 + w * k + (w - 2) / 2 for k in range(cols)] if col_labels is not None
                  else [], [str(c) for c in col_labels] if col_labels is not None else [])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def captioned_grid_figure(images: torch.Tensor, captions, *, ncol: int, title: str | None = None,
                          size: float = 1.1):
    """Images (N, C, H, W) in [-1, 1], each with a small caption under it (e.g. its attributes)."""
    rows = -(-len(images) // ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(ncol * size, rows * (size + 0.25) + 0.3),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(grid_array(images[k:k + 1], nrow=1, pad=0), cmap="gray", vmin=0, vmax=1)
            ax.set_title(captions[k], fontsize=6, y=-0.22)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def png_bytes(fig, *, dpi: int = 100) -> bytes:
    """A figure as reproducible PNG bytes (no software/time metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def array_png(array: np.ndarray, *, upscale: int = 1) -> bytes:
    """A [0, 1] grayscale or RGB array as PNG bytes (for ``widgets.Image``)."""
    from PIL import Image

    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=0).repeat(upscale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class SavedFigure(type(Path())):
    """The path of a saved figure (a :class:`pathlib.Path`). Its repr is the path relative to the
    repository, e.g. ``figures/quick/s03_noising.png``, so that a notebook cell ending on
    ``plots.save_figure(...)`` shows where the figure went and nothing machine-specific; a GIF
    also shows itself (``image/gif``)."""

    def relative(self) -> str:
        try:
            return self.relative_to(runtime.project_root()).as_posix()
        except ValueError:
            return self.name

    caption = ""   # what made it, from its sidecar (save_figure sets it)

    def __repr__(self) -> str:
        return f"{self.relative()} ({self.caption})" if self.caption else self.relative()

    def _repr_mimebundle_(self, include=None, exclude=None):
        if self.suffix != ".gif" or not self.exists():
            return None
        return {"image/gif": base64.b64encode(self.read_bytes()).decode("ascii"),
                "text/plain": repr(self)}


# Sidecar keys shown beside a figure's path, in this order: how many images, from which seed.
_CAPTION_COUNTS = ("samples", "samples_per_class", "images", "draws", "columns")


def caption(meta: dict) -> str:
    """A figure's provenance in one line, e.g. ``profile quick, cpu, seed 0, 16 samples, euler
    5 steps``: profile and device always, then the seed, counts and sampler where it has them."""
    parts = [f"profile {meta['profile']}", str(meta["device"])]
    if "seed" in meta:
        parts.append(f"seed {meta['seed']}")
    for key in _CAPTION_COUNTS:
        if key in meta:
            parts.append(f"{meta[key]} {key.replace('_', ' ')}")
    if "steps" in meta and isinstance(meta["steps"], int):
        parts.append(f"{meta.get('solver', '')} {meta['steps']} steps".strip())
    return ", ".join(parts)


def _figure_path(slide: str, name: str, ext: str) -> SavedFigure:
    """``figures[/quick]/<slide>_<name>.<ext>``, with the slide id and name checked."""
    if not SLIDE_ID.match(slide):
        raise ValueError(f"slide id {slide!r} must look like 's03' (slide number, two digits)")
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"figure name {name!r} must be lowercase letters, digits and '_'")
    return SavedFigure(runtime.output_dir("figures") / f"{slide}_{name}.{ext}")


def save_figure(fig, *, slide: str, name: str, provenance: dict | None = None,
                close: bool = False) -> SavedFigure:
    """Save ``fig`` as ``figures[/quick]/<slide>_<name>.png`` with a ``.json`` provenance sidecar.

    ``slide`` is the report's slide id, e.g. ``"s03"``; full-profile figures go to ``figures/``,
    quick-profile ones to ``figures/quick/`` so that a quick run never overwrites a full one.
    Returns the path (:class:`SavedFigure`: shown as the path relative to the repository).
    """
    path = _figure_path(slide, name, "png")
    atomic_write(path, png_bytes(fig))
    path.caption = caption(_sidecar(path, provenance))
    if close:
        plt.close(fig)
    return path


def _sidecar(path: Path, provenance: dict | None) -> dict:
    meta = results.provenance(figure=path.name, **(provenance or {}))
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def save_animation(frames: list[np.ndarray], *, slide: str, name: str,
                   provenance: dict | None = None, frame_ms: int = 80,
                   upscale: int = 3) -> SavedFigure:
    """Save [0, 1] grayscale frames as ``figures[/quick]/<slide>_<name>.gif`` (looping).

    Returns the path (:class:`SavedFigure`); as the last expression of a notebook cell it shows
    the animation itself."""
    from PIL import Image

    path = _figure_path(slide, name, "gif")
    images = [Image.fromarray((np.clip(f, 0, 1) * 255).round().astype(np.uint8)
                              .repeat(upscale, 0).repeat(upscale, 1)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=frame_ms, loop=0)
    atomic_write(path, buf.getvalue())
    path.caption = caption(_sidecar(path, provenance))
    return path


def integer_ticks(ax, *, axis: str = "x") -> None:
    """Ticks at whole numbers only, for an axis of epochs or steps (no tick at 1.5 epochs)."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax, *, handles=None, fontsize: float = 8, **kwargs):
    """The legend to the right of the axes, off the curves; the figure's layout must leave it
    room (``tight_layout`` or a constrained layout does)."""
    kwargs = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0,
              "fontsize": fontsize, **kwargs}
    return ax.legend(**kwargs) if handles is None else ax.legend(handles=handles, **kwargs)


def loss_curves_figure(histories: dict[str, dict], *, title: str = "Training and validation loss"):
    """Slide 4: train (solid) and validation (dashed) loss per epoch, one colour per model; the
    legend (one entry per model, then the two line styles) sits right of the axes."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    handles = []
    for k, (label, h) in enumerate(histories.items()):
        epochs = range(1, len(h["train_loss"]) + 1)
        ax.plot(epochs, h["train_loss"], color=f"C{k}")
        ax.plot(epochs, h["valid_loss"], color=f"C{k}", ls="--")
        handles.append(Line2D([], [], color=f"C{k}", label=label))
    handles += [Line2D([], [], color="0.3", label="train"),
                Line2D([], [], color="0.3", ls="--", label="valid")]
    integer_ticks(ax)                                             # epochs are whole numbers
    ax.set_xlabel("epoch"); ax.set_ylabel("loss (MSE of F)"); ax.set_title(title)
    ax.grid(alpha=0.3)
    legend_outside(ax, handles=handles)
    fig.tight_layout()
    return fig


def log_ticks(ax, values, *, axis: str = "x") -> None:
    """A log axis labelled at ``values`` in plain numbers (5, 10, 35), not as powers of ten."""
    values = sorted(set(values))
    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xticks if axis == "x" else ax.set_yticks)(values, [f"{v:g}" for v in values])
    which.set_minor_formatter(NullFormatter())


def trajectory_figure(sigmas: list[float], rows: dict[str, list[torch.Tensor]], *,
                      steps: list[int], sample: int = 0):
    """Slide 5: one sample along the denoising steps; one row per quantity (x_t, D(x_t))."""
    fig, axes = plt.subplots(len(rows), len(steps), figsize=(1.3 * len(steps), 1.45 * len(rows)),
                             squeeze=False)
    for r, (label, frames) in enumerate(rows.items()):
        for c, step in enumerate(steps):
            ax = axes[r][c]
            ax.imshow(grid_array(frames[step][sample:sample + 1].clamp(-1, 1), nrow=1, pad=0),
                      cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]); ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {step + 1}\nsigma={sigmas[step]:.3g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig
