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


# ---- figure layout: legends off the curves, whole table headers, integer epoch ticks ----------

def _inside(inner, outer, *, tol: float = 0.5) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def _histories(epochs: int = 4) -> dict:
    rng = np.random.default_rng(0)
    return {f"class_{k} (128/8/64, {epochs} ep)": {"train_loss": list(1 + rng.random(epochs)),
                                                    "valid_loss": list(1 + rng.random(epochs))}
            for k in range(4)}


def test_loss_curves_legend_sits_off_the_axes_and_inside_the_figure():
    import matplotlib.pyplot as plt
    fig = plots.loss_curves_figure(_histories())
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert not legend.overlaps(area), (legend, area)       # no curve can lie under it
    assert _inside(legend, fig.bbox)                       # and it is not cut off
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[-2:] == ["train", "valid"] and len(texts) == 4 + 2
    plt.close(fig)


@pytest.mark.parametrize("epochs", [2, 4, 7, 40])
def test_epoch_axis_ticks_are_whole_numbers(epochs):
    import matplotlib.pyplot as plt
    fig = plots.loss_curves_figure(_histories(epochs))
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.xaxis.get_major_locator()() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_integer_ticks_helper_replaces_fractional_ticks():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2, 3], [3, 1, 2, 0])
    assert any(not float(t).is_integer() for t in ax.xaxis.get_major_locator()())  # 0.5, 1.5...
    plots.integer_ticks(ax)
    assert all(float(t).is_integer() for t in ax.xaxis.get_major_locator()())
    plt.close(fig)


def test_table_figure_shows_every_header_and_cell_whole():
    import matplotlib.pyplot as plt
    import pandas as pd

    from diffnb.course import tables

    columns = ["model", "report FID (slide 8)", "ours, report protocol", "floor (report)",
               "ours, standard (pooled)", "KID x1e3"]
    rng = np.random.default_rng(1)
    df = pd.DataFrame([["Cond. BatchNorm2d 1", *(100 + 400 * rng.random(5))] for _ in range(3)],
                      columns=columns, index=["condbn_1", "condbn_2", "class_1"])
    fig = tables.table_figure(df, title="Slide 8, quick profile (n report=4/class, standard=40)",
                              highlight_rows=[])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    headers = {c: cell for (r, c), cell in cells.items() if r == 0}
    assert len(headers) == len(columns)
    for c, cell in headers.items():
        text = cell.get_text()
        assert text.get_text().replace("\n", " ") == columns[c]      # wrapped, not shortened
        box = text.get_window_extent(renderer)
        assert _inside(box, fig.bbox), (columns[c], box, fig.bbox)
        assert _inside(box, cell.get_window_extent(renderer)), columns[c]   # no overlap
    for (r, c), cell in cells.items():                                 # body and row labels
        assert _inside(cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer))
        assert _inside(cell.get_window_extent(renderer), fig.bbox)
    title = [t for t in fig.texts if t.get_text().startswith("Slide 8")][0]
    assert _inside(title.get_window_extent(renderer), fig.bbox)
    plt.close(fig)


def test_table_figure_shows_a_score_not_computed_as_a_dash():
    import matplotlib.pyplot as plt
    import pandas as pd

    from diffnb.course import tables

    df = pd.DataFrame({"ours, standard (pooled)": [float("nan"), 33.26]}, index=["base_1", "class_4"])
    fig = tables.table_figure(df, highlight_rows=[])   # as notebook 05 draws slide 8
    texts = [cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()]
    plt.close(fig)
    assert "-" in texts and "33.3" in texts and not any("nan" in t for t in texts)
