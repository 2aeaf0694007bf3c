"""The sigma slider of notebook 01 (Python level), figure saving, and the class picker."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffnb import data, runtime
from diffnb.course import plots, widgets
from diffnb.diffusion import noise


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))).astype(np.float32) / 255


def test_noise_slider_redraws_the_noised_images():
    y = data.to_model_space(data.load("test").images[:3])
    ex = widgets.NoiseExplorer(y, seed=0, sigma=0.1, upscale=1)
    before, label_before = ex.image.value, ex.label.value
    ex.slider.value = 2.0                      # what a reader's drag does
    assert ex.image.value != before and ex.label.value != label_before
    assert "sigma = 2" in ex.label.value
    expected = noise.add_noise(y, 2.0, eps=ex.eps).clamp(-1, 1)
    np.testing.assert_allclose(decode(ex.image.value), plots.grid_array(expected, nrow=3), atol=1 / 255)
    assert ex.slider.min == pytest.approx(np.log10(0.002)) and ex.slider.max == pytest.approx(np.log10(80))


def test_save_figure_is_deterministic_and_records_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    grid = torch.linspace(-1, 1, 4 * 32 * 32).view(4, 1, 32, 32)
    def save():
        fig = plots.grid_figure(grid, nrow=2)
        path = plots.save_figure(fig, slide="s06", name="test_grid", provenance={"seed": 3}, close=True)
        return path, path.read_bytes()
    (path, first), (_, second) = save(), save()
    assert path == tmp_path / "figures" / "quick" / "s06_test_grid.png"
    assert first == second
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["seed"] == 3 and meta["profile"] == "quick"
    assert meta["device"] == runtime.device_name() and meta["torch"] == torch.__version__
    assert meta["commit"] == runtime.code_commit()
    with pytest.raises(ValueError, match="slide id"):
        plots.save_figure(plots.grid_figure(grid, nrow=2), slide="slide6", name="x")


def test_class_picker_redraws_on_class_and_seed(random_class_model):
    picker = widgets.ClassSampler(random_class_model, class_names=data.CLASS_NAMES, n=2, steps=3)
    first = picker.image.value
    picker.klass.value = 7
    assert picker.image.value != first and picker.label.value.startswith("Sneaker")
    second = picker.image.value
    picker.seed.value = 5
    assert picker.image.value != second
    picker.klass.value, picker.seed.value = 0, 0
    assert picker.image.value == first          # a seed fixes the samples
