"""Executing a notebook twice saves the same file (diffnb.execute): no per-cell timestamps, and
the kernel's random widget ids replaced by stable ones."""
import json
import uuid

import nbformat
import pytest

from diffnb import execute, runtime

STATE = "application/vnd.jupyter.widget-state+json"
VIEW = "application/vnd.jupyter.widget-view+json"


def _widget_notebook(ids: list[str]):
    """A notebook as nbclient saves one with a slider inside a box: three models, one view."""
    box, slider, layout = ids
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("box", id="c00")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "VBox()", VIEW: {"model_id": box, "version_major": 2, "version_minor": 0}})]
    cell.metadata["execution"] = {"iopub.status.idle": "2026-11-27T00:17:45.892918Z"}
    nb.cells = [cell]
    nb.metadata["widgets"] = {STATE: {"version_major": 2, "version_minor": 0, "state": {
        layout: {"model_name": "LayoutModel", "state": {}},
        slider: {"model_name": "FloatSliderModel", "state": {"layout": f"IPY_MODEL_{layout}"}},
        box: {"model_name": "VBoxModel", "state": {"children": [f"IPY_MODEL_{slider}"]}},
    }}}
    return nb


def test_stable_widget_ids_do_not_depend_on_the_kernels_random_ids():
    saved = []
    for _ in range(2):
        ids = [uuid.uuid4().hex for _ in range(3)]
        nb = _widget_notebook(ids)
        assert execute.stable_widget_ids(nb, salt="01_noising.ipynb") == 3
        text = json.dumps(nb, sort_keys=True)
        assert not any(i in text for i in ids), "an old id survived"
        saved.append(text)
    assert saved[0] == saved[1]
    nb = json.loads(saved[0])
    state = nb["metadata"]["widgets"][STATE]["state"]
    view = nb["cells"][0]["outputs"][0]["data"][VIEW]["model_id"]
    assert view in state and state[view]["model_name"] == "VBoxModel"   # references still resolve
    slider = state[view]["state"]["children"][0].removeprefix("IPY_MODEL_")
    assert state[slider]["model_name"] == "FloatSliderModel"
    assert state[slider]["state"]["layout"].removeprefix("IPY_MODEL_") in state
    other = _widget_notebook([uuid.uuid4().hex for _ in range(3)])
    execute.stable_widget_ids(other, salt="04_class_conditioning.ipynb")
    assert set(other.metadata["widgets"][STATE]["state"]).isdisjoint(state)  # per notebook


def test_a_notebook_without_widgets_is_left_alone():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    before = json.dumps(nb, sort_keys=True)
    assert execute.stable_widget_ids(nb, salt="x") == 0
    assert json.dumps(nb, sort_keys=True) == before


@pytest.mark.slow
def test_executing_twice_saves_the_same_file(tmp_path, monkeypatch):
    """A real kernel: a widget, a seeded draw, a figure. The second execution's file equals the
    first's byte for byte (and has no per-cell timestamps)."""
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    path = tmp_path / "notebooks" / "99_twice.ipynb"
    path.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipywidgets, torch\n"
        "import matplotlib.pyplot as plt\n"
        "print(torch.randn(3, generator=torch.Generator().manual_seed(0)))\n"
        "fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [1, 0]); plt.show()\n"
        "ipywidgets.VBox([ipywidgets.FloatSlider(value=0.5)])")])
    nbformat.write(nb, path)
    tiny = runtime.PROFILES["tiny"]
    saved = []
    for _ in range(2):
        out, _seconds = execute.execute(path, profile=tiny, timeout=120)
        assert out == path
        saved.append(path.read_text())
    assert saved[0] == saved[1]
    nb = json.loads(saved[0])
    assert "execution" not in nb["cells"][0]["metadata"]
    kinds = {k for o in nb["cells"][0]["outputs"] for k in o.get("data", {})}
    assert {"image/png", VIEW} <= kinds, kinds
    assert len(nb["metadata"]["widgets"][STATE]["state"]) >= 3
