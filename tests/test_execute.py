"""Executing a notebook twice saves the same file (diffnb.run.execute): no per-cell timestamps, the
kernel's random widget ids replaced by stable ones, only the widgets a cell shows, one output per
run of stdout."""
import json
import shutil
import uuid

import nbformat
import pytest

from diffnb import runtime
from diffnb.run import execute

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


def test_only_widgets_a_cell_shows_are_saved():
    ids = [uuid.uuid4().hex for _ in range(3)]
    nb = _widget_notebook(ids)
    state = nb.metadata["widgets"][STATE]["state"]
    bar, style = uuid.uuid4().hex, uuid.uuid4().hex   # a closed progress bar and its style
    state[bar] = {"model_name": "FloatProgressModel", "state": {"style": f"IPY_MODEL_{style}"}}
    state[style] = {"model_name": "ProgressStyleModel", "state": {}}
    assert execute.shown_widgets_only(nb) == 2
    assert set(nb.metadata["widgets"][STATE]["state"]) == set(ids)   # box, slider, layout
    nb.cells[0].outputs = []                           # nothing shown: no widget state at all
    assert execute.shown_widgets_only(nb) == 3 and "widgets" not in nb.metadata


def test_consecutive_stream_outputs_are_saved_as_one():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="b\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="w\n"),
                    nbformat.v4.new_output("display_data", data={"text/plain": "fig"}),
                    nbformat.v4.new_output("stream", name="stdout", text="c\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="d\n")]
    execute.coalesce_streams(cell)
    assert [(o.get("name"), o.get("text")) for o in cell.outputs] == [
        ("stdout", "a\nb\n"), ("stderr", "w\n"), (None, None), ("stdout", "c\nd\n")]


def test_a_figures_text_stand_in_is_not_saved():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
                        "image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 565x500 with 1 Axes>"}),
                    nbformat.v4.new_output("execute_result", execution_count=1, data={
                        "text/plain": "<Figure size 565x500 with 1 Axes>"}),   # no image: kept
                    nbformat.v4.new_output("display_data", data={
                        "image/png": "iVBORw0KGgo=", "text/plain": "a caption"})]
    execute.drop_figure_text(cell)
    assert [sorted(o["data"]) for o in cell.outputs] == [
        ["image/png"], ["text/plain"], ["image/png", "text/plain"]]


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
        "import sys, time\n"
        "from tqdm.auto import tqdm\n"
        "for _ in tqdm(range(3), leave=False): time.sleep(0.05)\n"   # a bar closed at the end
        "print('one', flush=True); time.sleep(0.2); print('two', flush=True)\n"
        "ipywidgets.VBox([ipywidgets.FloatSlider(value=0.5)])")])
    stale = _widget_notebook([uuid.uuid4().hex for _ in range(3)]).metadata["widgets"]
    nb.metadata["widgets"] = stale                     # an earlier run's widget state
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
    state = nb["metadata"]["widgets"][STATE]["state"]
    assert len(state) >= 3 and not any("Progress" in m["model_name"] for m in state.values())
    streams = [o["text"] for o in nb["cells"][0]["outputs"] if o.get("name") == "stdout"]
    assert len(streams) == 2 and "".join(streams[1]) == "one\ntwo\n"   # the tensor; one stream


@pytest.mark.slow
def test_a_later_notebook_runs_alone_from_the_kept_weights(tmp_path, monkeypatch):
    """Notebook 05, executed on its own in the cpu profile with no notebook run before it: it
    loads the kept weights, reads the committed scores back and re-makes the slide-8 table equal
    to the committed one. Its outputs go to a temporary folder; the committed files stay."""
    root = runtime.project_root()
    committed = root / "results" / "cpu"
    def tables(folder, names):   # the tables notebooks make; memo/ and fid/ are read back
        return [n for n in names if folder == str(committed) and n.startswith(("s0", "s1"))]
    shutil.copytree(committed, tmp_path / "results" / "cpu", ignore=tables)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    path = tmp_path / "notebooks" / "05_fid_evaluation.ipynb"
    path.parent.mkdir()
    shutil.copy(root / "notebooks" / path.name, path)
    out, _seconds = execute.execute(path, profile=runtime.PROFILES["cpu"], timeout=900)
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors[0]["evalue"] if errors else ""
    made = tmp_path / "results" / "cpu" / "s08_fid_models.csv"
    assert made.read_text() == (committed / "s08_fid_models.csv").read_text()
