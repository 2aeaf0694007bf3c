"""The committed notebooks read cleanly: their saved outputs hold no errors, tracebacks, frozen
progress bars, absolute paths, object reprs or unexpected stderr, and no warning twice in a cell;
every figure and table is followed by a reading, and every notebook ends with an exercise.

Each rule is also run on small synthetic notebooks that break it, so that this file can fail.
The helpers that make outputs clean at the source (``plots.SavedFigure``, ``tables.StyledTable``,
``readings.Reading``) are tested here too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

# An absolute path to a file: two or more folders, a known extension, not inside a relative path.
ABS_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/){2,}[\w.-]+\.(?:py|png|gif|json|csv|pt|ipynb)\b")
# Default object reprs (``<pkg.Class object at 0x...>``, ``<... at 0x7f...>``) and path reprs.
OBJECT_REPR = re.compile(r"<[\w.]+ object(?: at 0x[0-9a-fA-F]+)?>|\bat 0x[0-9a-fA-F]{4,}\b")
FIGURE_REPR = re.compile(r"<Figure size [\d.]+x[\d.]+ with \d+ Axes>")
PATH_REPR = re.compile(r"\b(?:Posix|Windows|Pure\w*)Path\(")
FROZEN_BAR = re.compile(r"(?<![\d.])0%\|")
DONE_BAR = re.compile(r"100%\|")
TRACEBACK = "Traceback (most recent call last)"
WARNING_LINE = re.compile(r"^(?:(?P<where>\S.*?:\d+): )?(?P<category>[A-Z]\w*(?:Warning|Error)): "
                          r"(?P<message>.*)$")
TEXT_MIMES = ("text/plain", "text/markdown", "text/html", "text/latex", "application/json")
RESULT_MIMES = ("image/png", "image/gif", "image/jpeg", "image/svg+xml", "text/html")

# The stderr a notebook may show on purpose. Everything else on stderr is a problem.
ALLOWED_WARNINGS = {
    # FID below ~2048 images per set is biased upward; notebooks 05 and 06 keep the note visible
    # (once per scoring call) so that no small-n FID is read without its floor.
    "SmallSampleWarning",
}
# A finished progress bar (the trainer prints one per run, on stderr).
ALLOWED_STDERR_LINES = (DONE_BAR,)


def final_text(text: str) -> str:
    """What a terminal shows: per line, only what follows the last carriage return."""
    lines = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r")]
        kept = [p for p in parts if p.strip()]
        lines.append(kept[-1] if kept else "")
    return "\n".join(lines)


def _join(value) -> str:
    return "".join(value) if isinstance(value, list) else (value if isinstance(value, str)
                                                            else json.dumps(value))


def output_texts(output: dict) -> list[tuple[str, str]]:
    """(where, text) for every piece of text an output shows."""
    kind = output.get("output_type")
    if kind == "stream":
        return [(output.get("name", "stdout"), final_text(_join(output.get("text", ""))))]
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        return [(mime, _join(data[mime])) for mime in TEXT_MIMES if mime in data]
    if kind == "error":
        return [("traceback", "\n".join(output.get("traceback", [])))]
    return []


def _stderr_problems(text: str) -> list[str]:
    out, in_warning = [], False
    for line in text.split("\n"):
        if not line.strip():
            continue
        w = WARNING_LINE.match(line)
        if w:
            in_warning = w["category"] in ALLOWED_WARNINGS
            if not in_warning:
                out.append(f"unexpected warning on stderr: {line.strip()[:160]}")
            continue
        if in_warning and line[:1].isspace():       # the source line a warning echoes
            continue
        in_warning = False
        if any(p.search(line) for p in ALLOWED_STDERR_LINES):
            continue
        out.append(f"unexpected stderr: {line.strip()[:160]}")
    return out


def cell_problems(cell: dict) -> list[str]:
    problems, warnings = [], []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            problems.append(f"error output: {output.get('ename')}: {output.get('evalue', '')[:120]}")
        for where, text in output_texts(output):
            if TRACEBACK in text:
                problems.append(f"traceback in {where}")
            if FROZEN_BAR.search(text):
                problems.append(f"frozen progress bar (0%|) in {where}")
            for m in ABS_PATH.finditer(text):
                problems.append(f"absolute path in {where}: {m.group(0)}")
            for m in PATH_REPR.finditer(text):
                problems.append(f"path repr in {where}: {text[m.start():m.start() + 60]}")
            for m in OBJECT_REPR.finditer(text):
                problems.append(f"object repr in {where}: {m.group(0)}")
            if FIGURE_REPR.search(text):
                problems.append(f"figure repr in {where} (execute.drop_figure_text drops it)")
            if where == "stderr":
                problems += _stderr_problems(text)
                for line in text.split("\n"):
                    w = WARNING_LINE.match(line)
                    if w:
                        warnings.append((w["category"], w["message"].strip()))
    for warning in dict.fromkeys(warnings):
        count = warnings.count(warning)
        if count > 1:
            problems.append(f"the same warning {count} times: {warning[0]}: {warning[1][:100]}")
    return problems


def notebook_problems(nb: dict) -> list[str]:
    """Every problem of a notebook's saved outputs, as 'cell N: ...' lines."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            problems += [f"cell {i}: {p}" for p in cell_problems(cell)]
    return problems + widget_problems(nb)


def widget_problems(nb: dict) -> list[str]:
    """Saved widget models that no output shows (a closed bar, an earlier run's state): their
    frozen values and timings would change with every run."""
    view = "application/vnd.jupyter.widget-view+json"
    state = nb.get("metadata", {}).get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    todo = [o["data"][view]["model_id"] for c in nb.get("cells", [])
            for o in c.get("outputs", []) if view in o.get("data", {})]
    shown = set()
    while todo:
        mid = todo.pop()
        if mid in state and mid not in shown:
            shown.add(mid)
            todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid]))
    orphans = sorted({state[m]["model_name"] for m in set(state) - shown})
    return [f"widget state of models no cell shows: {', '.join(orphans)}"] if orphans else []


def _source(cell: dict) -> str:
    return _join(cell.get("source", ""))


def is_heading(cell: dict) -> bool:
    text = _source(cell).strip()
    return cell.get("cell_type") == "markdown" and text.startswith("#") and "\n" not in text


def is_reading(cell: dict) -> bool:
    """A markdown paragraph (not only a heading) or a code cell that shows computed Markdown."""
    if cell.get("cell_type") == "markdown":
        first = next((line for line in _source(cell).splitlines() if line.strip()), "")
        return bool(first) and not first.lstrip().startswith("#")
    if cell.get("cell_type") == "code":
        return any("text/markdown" in o.get("data", {}) for o in cell.get("outputs", []))
    return False


def shows_result(cell: dict) -> bool:
    """A code cell whose outputs show a figure or a table."""
    return cell.get("cell_type") == "code" and any(
        mime in o.get("data", {}) for o in cell.get("outputs", []) for mime in RESULT_MIMES)


def unread_results(nb: dict) -> list[str]:
    cells = nb.get("cells", [])
    return [f"cell {i} shows a figure or table and cell {i + 1} is no reading"
            for i, cell in enumerate(cells)
            if shows_result(cell) and not (i + 1 < len(cells) and is_reading(cells[i + 1]))]


def exercise_problems(nb: dict) -> list[str]:
    cells = nb.get("cells", [])
    if not cells or cells[-1].get("cell_type") != "markdown":
        return ["the last cell is not a markdown cell"]
    text = _source(cells[-1])
    out = []
    if not re.match(r"#+ *Exercise", text.strip()):
        out.append("the last cell is not an '## Exercise' cell")
    if "`" not in text:
        out.append("the exercise names no cell or code to edit")
    if sum(1 for c in cells if re.match(r"#+ *Exercise", _source(c).strip())) != 1:
        out.append("not exactly one exercise cell")
    return out


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- the committed notebooks ----------------------------------------------------------------

def test_there_are_notebooks():
    assert len(NOTEBOOKS) == 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_outputs_are_clean(path):
    problems = notebook_problems(load(path))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_and_table_is_followed_by_a_reading(path):
    problems = unread_results(load(path))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_ends_with_one_exercise(path):
    problems = exercise_problems(load(path))
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_read_the_profile_once_and_use_its_fields(path):
    code = [_source(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert code and re.search(r"^p = runtime\.profile\(\)$", code[0], re.M), \
        f"{path.name}: the first code cell must read the profile once: p = runtime.profile()"
    for k, src in enumerate(code):
        assert not re.search(r"\.name\s*[!=]=\s*['\"](quick|full)['\"]", src), \
            f"{path.name}: branch on a profile field, not on the profile's name:\n{src}"
        assert k == 0 or "runtime.profile()" not in src, \
            f"{path.name}: use p (read in the first cell) instead of runtime.profile():\n{src}"


LONGEST_SENTENCE = 40   # words; the course aims at ~35
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?]\))\s+")
FSTRING = re.compile(r"""\bf(["'])(?:(?!\1).)*\1""")


def long_sentences(cell_source: str, *, limit: int = LONGEST_SENTENCE) -> list[str]:
    """Sentences of a Markdown cell over ``limit`` words; tables, code and display maths aside."""
    text = re.sub(r"\$\$.*?\$\$", " FORMULA. ", cell_source, flags=re.S)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    prose = " ".join(line for line in text.split("\n")
                     if not line.lstrip().startswith(("|", "#")))
    return [s for s in SENTENCE_END.split(prose) if len(s.split()) > limit]


def prose_in_code(cell_source: str) -> list[str]:
    """f-strings in a code cell that hold more than one sentence: a reading belongs in a
    function of ``diffnb.course.readings``, shown by one call."""
    return [m.group(0) for m in FSTRING.finditer(cell_source)
            if re.search(r"[a-z)}][.:;] [A-Z]", m.group(0))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_is_short_sentences_and_readings_are_calls(path):
    cells = load(path)["cells"]
    long = [s for c in cells if c["cell_type"] == "markdown" for s in long_sentences(_source(c))]
    assert not long, f"{path.name}: sentences over {LONGEST_SENTENCE} words:\n" + "\n".join(long)
    prose = [f for c in cells if c["cell_type"] == "code" for f in prose_in_code(_source(c))]
    assert not prose, f"{path.name}: readings written in a code cell:\n" + "\n".join(prose)


def test_the_prose_rules_catch_long_sentences_and_written_readings():
    long = " ".join(["word"] * 41) + "."
    assert long_sentences(f"Short one. {long} Another.") == [long]
    assert not long_sentences("| " + " ".join(["cell"] * 60) + " |\n$$" + "x " * 60 + "$$")
    assert not long_sentences("A sentence. " * 30)
    assert prose_in_code('readings.md(f"The loss is {x:.3f}. It fell.")')
    assert not prose_in_code('print(f"sigma_data = {s:.3f}")')
    assert not prose_in_code('title=f"{t.preset.title} ({t.preset.short})"')


def test_the_repository_cites_only_what_a_reader_can_find():
    """Notebooks and README cite papers, public sources and the report's slides, never a private
    notes file."""
    texts = {p.name: p.read_text() for p in [*NOTEBOOKS, ROOT / "README.md"]}
    for name, text in texts.items():
        private = "REFER" + "ENCE"             # spelled apart: this file must not cite it either
        assert not re.search(rf"\b{private}\b", text), f"{name} cites {private}"


README_CODE_LINK = re.compile(r"\]\((diffnb/[\w/.]*)\)")


def test_the_readmes_code_links_point_at_the_package():
    """The course table's code column and the package map: every link into ``diffnb/`` names a
    file or folder that exists, and every folder of the package is on the map."""
    readme = (ROOT / "README.md").read_text()
    links = README_CODE_LINK.findall(readme)
    assert len(links) >= 15, "the README's code column is gone"
    for path in links:
        assert (ROOT / path).exists(), path
    folders = {p.parent.relative_to(ROOT).as_posix() + "/" for p in (ROOT / "diffnb").glob("*/__init__.py")}
    assert folders <= set(links), f"not on the README's map: {sorted(folders - set(links))}"
    for nb in NOTEBOOKS:
        assert f"(notebooks/{nb.name})" in readme, nb.name


def committed_profile() -> str:
    """``cpu`` once the cpu run's slide-8 table is committed (``results/cpu/``), else ``quick``."""
    return "cpu" if (ROOT / "results" / "cpu" / "s08_fid_models.csv").exists() else "quick"


def subfolder(profile: str) -> str:
    """A profile's part of its output paths, as ``runtime.output_dir`` names them."""
    return "" if profile == "full" else f"{profile}/"


def readme_opening_problems(readme: str, *, profile: str, table, root: Path = ROOT) -> list[str]:
    """What the README's opening (before its first ``##``) gets wrong about the committed run of
    ``profile`` whose slide-8 table is ``table``: its first figure must come from that profile's
    folder. A quick opening says it is a smoke run; a cpu opening shows slide 7 or 10 and slide
    8, says the FID line ``readings.headline(table)``, and names the CPU it was trained on."""
    from diffnb.course import readings

    folder = subfolder(profile)
    opening, problems = readme.split("\n## ", 1)[0], []
    flat = " ".join(opening.split())
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", opening)
    if not images:
        problems.append("the README opens without a figure")
    elif not re.fullmatch(rf"figures/{folder}s\d\d_[\w.-]+\.(png|gif)", images[0]) \
            or not (root / images[0]).is_file():
        problems.append(f"{images[0]}: the opening figure should be one of the {profile} run's "
                        f"(figures/{folder})")
    if ("smoke run" in flat) != (profile == "quick"):
        problems.append("only a quick opening says that it is a smoke run")
    if profile != "quick":       # the course's face: samples per class, the FID table
        line = str(readings.headline(table))
        if line not in flat:
            problems.append(f"the README's opening should say: {line}")
        shown = {m[:3] for m in re.findall(rf"!\[[^\]]*\]\(figures/{folder}(s\d\d_[\w.-]+)\)",
                                           opening)}
        if not ("s08" in shown and shown & {"s07", "s10"}):
            problems.append(f"the opening shows {sorted(shown)}: it should show slide 7 or 10, "
                            "and 8")
        manifest = root / "weights" / profile / "MANIFEST.json"
        cpus = {e["cpu"].split(" (")[0] for e in json.loads(manifest.read_text())["files"].values()} \
            if manifest.exists() else {"(no manifest)"}
        if not all(c in flat for c in cpus):
            problems.append(f"the opening should name the CPU the models were trained on: {cpus}")
    return problems


def test_the_readme_opens_with_the_committed_runs_figure_and_fids():
    """Once the cpu run's results are committed (``results/cpu/s08_fid_models.csv``) this fails
    until the README's opening is the cpu run's."""
    import pandas as pd

    profile = committed_profile()
    folder = subfolder(profile)
    table = pd.read_csv(ROOT / f"results/{folder}s08_fid_models.csv")
    assert readme_opening_problems((ROOT / "README.md").read_text(), profile=profile,
                                   table=table) == []


def test_the_readme_rule_catches_a_stale_opening(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"ours, report protocol": [88.4, 120.6],
                          "ours, standard (pooled)": [3.6, 20.2],
                          "report FID (slide 8)": [87.83, 127.18]})
    for name in ("s03_noising", "s10_per_class_grids", "s08_fid_models"):
        for folder in ("figures/cpu", "figures/quick"):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / f"{name}.png").write_bytes(b"png")
    (tmp_path / "weights/cpu").mkdir(parents=True)
    (tmp_path / "weights/cpu/MANIFEST.json").write_text(json.dumps(
        {"files": {"a.safetensors": {"cpu": "AMD EPYC (family 25 model 17; 2 cores)"}}}))
    line = "88-121 (report protocol; 4-20 standard) against the report's 88-127"
    cpu = (f"# diffnb\n\nFIDs of {line}. Trained on an AMD EPYC in 9 hours.\n\n"
           "![10](figures/cpu/s10_per_class_grids.png) ![8](figures/cpu/s08_fid_models.png)\n\n"
           "## Next\n")
    assert readme_opening_problems(cpu, profile="cpu", table=table, root=tmp_path) == []
    quick = "# diffnb\n\nA quick smoke run.\n\n![3](figures/quick/s03_noising.png)\n\n## Next\n"
    assert readme_opening_problems(quick, profile="quick", table=table, root=tmp_path) == []
    for stale, profile, says in [
            (quick, "cpu", "should be one of the cpu run's"),            # left as it was
            (cpu.replace("4-20", "4-21"), "cpu", "should say: " + line),
            (cpu.replace("![10](figures/cpu/s10_per_class_grids.png) ", ""), "cpu", "slide 7 or"),
            (cpu.replace("AMD EPYC", "a CPU"), "cpu", "name the CPU"),
            (cpu.replace("FIDs", "A smoke run's FIDs"), "cpu", "smoke run"),
            (quick.replace("smoke run", "run"), "quick", "smoke run"),
            (cpu.replace("s10_per_class", "s10_missing"), "cpu", "s10_missing_grids.png")]:
        problems = readme_opening_problems(stale, profile=profile, table=table, root=tmp_path)
        assert any(says in p for p in problems), (says, problems)


# ---- the rules, on synthetic notebooks: each one must catch what it is for ------------------

def nb_with(*outputs, source="x = 1") -> dict:
    return {"cells": [{"cell_type": "code", "source": source, "outputs": list(outputs),
                       "metadata": {}, "execution_count": 1}], "metadata": {}, "nbformat": 4}


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def plain(text: str, kind: str = "execute_result", **more) -> dict:
    return {"output_type": kind, "data": {"text/plain": text, **more}, "metadata": {}}


FIGURE = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo="}}
WIDGET = {"output_type": "display_data", "metadata": {},
          "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "ab", "version_major": 2},
                   "text/plain": "VBox(children=(FloatLogSlider(value=0.5),))"}}
SMALL_N = ("/tmp/ipykernel_1/2.py:3: SmallSampleWarning: protocol 'report' with n=8: FID is "
           "biased upward\n  s = evaluation.score(t)\n")
SMALL_N_CLEAN = "SmallSampleWarning: protocol 'report' with n=8: FID is biased upward\n"


def test_a_clean_notebook_has_no_problems():
    nb = nb_with(stream("train (50000, 28, 28)\nsigma_data = 0.664\n"), FIGURE, WIDGET,
                 plain("figures/quick/s03_noising.png"),
                 stream(SMALL_N_CLEAN, "stderr"),
                 stream("base_1:   0%|          | 0/8\rbase_1: 100%|##########| 8/8 [00:05]\n",
                        "stderr"),
                 {"output_type": "display_data", "metadata": {},
                  "data": {"text/markdown": "Lowest FID: **class_3**", "text/plain": "Lowest FID"}})
    assert notebook_problems(nb) == []


@pytest.mark.parametrize("output, expected", [
    ({"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": ["ValueError"]},
     "error output: ValueError"),
    (stream("Traceback (most recent call last):\n  File x\nKeyError: 1\n"), "traceback in stdout"),
    (plain("base_1 epoch 1/8:   0%|          | 0/8 [00:00<?, ?it/s]", "display_data"),
     "frozen progress bar"),
    (stream("loss:   0%|    | 0/8\n", "stderr"), "frozen progress bar"),
    (plain("PosixPath('/work/main/figures/quick/s03_noising.png')"), "path repr"),
    (plain("PosixPath('/work/main/figures/quick/s03_noising.png')"), "absolute path"),
    (stream("wrote /home/me/diffnb/results/quick/s08.csv\n"), "absolute path"),
    (plain("<pandas.io.formats.style.Styler at 0x7f6281bfb6d0>", text_html="<table/>"),
     "object repr"),
    (plain("<IPython.core.display.Image object>", "display_data"), "object repr"),
    ({**FIGURE, "data": {**FIGURE["data"], "text/plain": "<Figure size 600x320 with 1 Axes>"}},
     "figure repr"),
    (stream("something went to stderr\n", "stderr"), "unexpected stderr"),
    (stream("/x/y/z.py:1: UserWarning: careful\n  call()\n", "stderr"), "unexpected warning"),
])
def test_each_rule_catches_its_problem(output, expected):
    if "text_html" in output.get("data", {}):
        output["data"]["text/html"] = output["data"].pop("text_html")
    problems = notebook_problems(nb_with(output))
    assert any(expected in p for p in problems), problems


def test_saved_widget_state_that_no_cell_shows_is_caught():
    nb = nb_with(WIDGET)
    shown = WIDGET["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = {shown: {"model_name": "FloatSliderModel", "state": {}}}
    nb["metadata"] = {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}}
    assert notebook_problems(nb) == []
    state["ab12"] = {"model_name": "FloatProgressModel", "state": {"value": 7.0}}
    assert notebook_problems(nb) == ["widget state of models no cell shows: FloatProgressModel"]


def test_an_allowed_warning_still_may_not_carry_an_absolute_path():
    problems = notebook_problems(nb_with(stream(SMALL_N, "stderr")))
    assert problems and all("absolute path" in p for p in problems), problems


def test_the_same_warning_twice_in_a_cell_is_caught_even_across_outputs():
    assert notebook_problems(nb_with(stream(SMALL_N_CLEAN, "stderr"))) == []
    twice = nb_with(stream(SMALL_N_CLEAN, "stderr"), stream(SMALL_N_CLEAN, "stderr"))
    assert any("the same warning 2 times" in p for p in notebook_problems(twice))
    other = SMALL_N_CLEAN.replace("n=8", "n=60")
    assert notebook_problems(nb_with(stream(SMALL_N_CLEAN + other, "stderr"))) == []


def test_relative_paths_and_plain_numbers_are_not_taken_for_problems():
    nb = nb_with(stream("results/quick/s08_fid_models.csv and figures/quick/s03_noising.png\n"
                        "10%| and 100%| of 2.0/3.5 done, 0x at 0x1\n"))
    assert [p for p in notebook_problems(nb) if "frozen" in p or "absolute" in p] == []


def test_figure_or_table_without_reading_is_caught():
    md = lambda text: {"cell_type": "markdown", "source": text, "metadata": {}}
    fig = nb_with(FIGURE)["cells"][0]
    reading_cell = nb_with({"output_type": "display_data", "metadata": {},
                            "data": {"text/markdown": "x", "text/plain": "x"}})["cells"][0]
    assert unread_results({"cells": [fig, md("## Next section")]})
    assert unread_results({"cells": [fig]})
    assert unread_results({"cells": [fig, fig, md("Two figures.")]}) == [
        "cell 0 shows a figure or table and cell 1 is no reading"]
    assert unread_results({"cells": [fig, md("Look at the left column.")]}) == []
    assert unread_results({"cells": [fig, reading_cell]}) == []


def test_missing_or_misplaced_exercise_is_caught():
    md = lambda text: {"cell_type": "markdown", "source": text, "metadata": {}}
    good = md("## Exercise\n\nIn the cell `sigmas = [...]`, add 200.")
    assert exercise_problems({"cells": [md("# T"), good]}) == []
    assert exercise_problems({"cells": [good, md("The end.")]})
    assert exercise_problems({"cells": [md("# T"), md("## Exercise\n\nTry something.")]})
    assert exercise_problems({"cells": [good, good]})


def test_final_text_keeps_what_a_terminal_shows():
    assert final_text("a:   0%|  | 0/8\ra: 100%|##| 8/8\n") == "a: 100%|##| 8/8\n"
    assert final_text("a:   0%|  | 0/8\r") == "a:   0%|  | 0/8"


# ---- the sources of clean outputs -------------------------------------------------------------

def test_saved_figure_shows_a_path_relative_to_the_repository(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import torch
    from IPython.core.formatters import DisplayFormatter

    from diffnb import runtime
    from diffnb.course import plots

    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    fig = plots.grid_figure(torch.zeros(4, 1, 32, 32), nrow=2)
    path = plots.save_figure(fig, slide="s06", name="repr_test", close=True,
                             provenance={"seed": 7, "samples": 4, "solver": "heun", "steps": 9})
    assert isinstance(path, Path) and path.exists() and path.is_absolute()
    profile = runtime.profile().name
    where = f"figures/{subfolder(profile)}s06_repr_test.png"
    # the path, then its provenance from the sidecar: what a reader needs beside the figure
    assert repr(path) == f"{where} (profile {profile}, {runtime.device_name()}, seed 7, 4 samples, heun 9 steps)"
    assert plots.caption(json.loads(path.with_suffix(".json").read_text())) in repr(path)
    data, _ = DisplayFormatter().format(path)
    assert data == {"text/plain": repr(path)}
    assert notebook_problems(nb_with(plain(data["text/plain"]))) == []

    gif = plots.save_animation([torch.rand(8, 8).numpy()] * 2, slide="s05", name="repr_test")
    data, _ = DisplayFormatter().format(gif)
    assert set(data) == {"image/gif", "text/plain"} and data["text/plain"] == repr(gif)
    assert notebook_problems(nb_with(plain(data["text/plain"]))) == []


def test_styled_table_renders_html_and_a_clean_text_repr():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("jinja2")
    from IPython.core.formatters import DisplayFormatter

    from diffnb.course import tables

    df = pd.DataFrame({"T-shirt/top": [133.04, 120.0], "Trouser": [53.28, 60.0]},
                      index=["Model 1", "real vs real"])
    data, _ = DisplayFormatter().format(tables.styled_extremes(df))
    assert "color: red" in data["text/html"] and "color: green" in data["text/html"]
    assert "133.0" in data["text/plain"] and "Model 1" in data["text/plain"]
    again, _ = DisplayFormatter().format(tables.styled_extremes(df.copy()))
    assert again == data                       # no random ids: re-running changes nothing
    import re

    def red_cells(styled):
        html = DisplayFormatter().format(styled)[0]["text/html"]
        return sorted({cell for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", html)
                       if "color: red" in body
                       for cell in re.findall(r"(row\d+_col\d+)", selectors)})
    assert red_cells(tables.styled_extremes(df)) == ["row0_col0", "row1_col0"]   # highest red
    assert red_cells(tables.styled_extremes(df, higher_is_better=True)) == ["row0_col1",
                                                                            "row1_col1"]
    assert notebook_problems(nb_with({"output_type": "execute_result", "metadata": {},
                                      "data": data})) == []
