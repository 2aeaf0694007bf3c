"""A real browser on the notebooks' widgets: JupyterLab + headless Chromium move the sigma slider
of notebook 01 and pick a class and a seed in notebook 04.

The fixture starts ``jupyter lab`` from this environment on 127.0.0.1 (a free port, a random token,
throw-away Jupyter config/data/runtime/settings/workspace folders), and each test runs
``tests/browser/run_notebook.mjs`` (npm's ``playwright-core`` driving the system Chromium) on a
*copy* of its notebook with the outputs stripped, placed under the git-ignored
``artifacts/browser/``; the notebooks in ``notebooks/`` are never opened. Note that running a copy
executes the notebook, so it rewrites ``figures/<profile>/s*_*.png`` exactly as nbval does.

The kernel inherits this process's environment, so ``DIFFNB_PROFILE`` (unset: ``quick`` without
CUDA, ``full`` with it) picks the same profile as the other tests; ``diffnb`` comes from the
editable install, so ``runtime.project_root()`` is this checkout even though the copy runs in a
temporary folder, and notebook 04 reuses the checkpoints in ``checkpoints/<profile>/``. In
``make test`` these tests run after the notebooks (tests/conftest.py moves ``browser`` tests last),
so nbval's notebook 04 has written those checkpoints; run alone without them, notebook 04 trains
class_1..class_4 first (minutes on a CPU; hence that test's longer timeouts).

Artefacts, kept after the run in ``artifacts/browser/``: ``01_noising-sigma.png`` (the page),
``01_noising-sigma-widget.png`` (the widget's cell), ``01_noising-sigma.json`` (the script's
report), the same three for ``04_class_conditioning-picker``, and ``jupyter-server.log``.

Needs Chromium (``apt-get install chromium``) and ``node_modules/playwright-core`` (``npm ci``);
``scripts/setup.sh --test`` installs both. Without them the test is skipped, or fails when ``CI``
is set.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
SCRIPT = ROOT / "tests" / "browser" / "run_notebook.mjs"
NODE_TIMEOUT_S = 240          # the node script's own watchdog; the whole run takes ~20-40 s
CELLS_TIMEOUT_S = 120         # for "run all cells" inside it
# Notebook 04: ~60-100 s on 2 busy CPU cores with its checkpoints present (its cells sample 80
# images); without them it trains class_1/class_2 first (~3-6 min more).
PICKER_NODE_TIMEOUT_S = 600
PICKER_CELLS_TIMEOUT_S = 420
SERVER_START_TIMEOUT_S = 120


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _chromium() -> str | None:
    for candidate in (os.environ.get("DIFFNB_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing() -> list[str]:
    """What the browser test needs and this machine lacks, each with how to install it."""
    missing = []
    if _chromium() is None:
        missing.append("Chromium (`apt-get install chromium`, which `scripts/setup.sh --test` does as "
                       "root; or set DIFFNB_CHROMIUM to a Chromium binary)")
    node = shutil.which("node")
    if node is None:
        missing.append("Node.js >= 20 with npm (e.g. NodeSource's nodejs package; Debian 12's own "
                       "nodejs is 18, too old for playwright-core)")
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        major = re.match(r"v(\d+)", version)
        if not major or int(major.group(1)) < 20:
            missing.append(f"Node.js >= 20 (found {version or 'an unknown version'}; playwright-core "
                       "needs 20)")
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").exists():
        missing.append("node_modules/playwright-core (`npm ci` in the repository root, which "
                       "`scripts/setup.sh --test` runs)")
    for module in ("jupyterlab", "ipywidgets"):
        if find_spec(module) is None:
            missing.append(f"the Python package {module} (pip install -r requirements.txt)")
    return missing


@pytest.fixture(scope="module")
def browser_tools() -> dict:
    missing = _missing()
    if missing:
        message = "browser test needs " + "; ".join(missing)
        if _in_ci():
            pytest.fail(message + " (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(message)
    return {"node": shutil.which("node"), "chromium": _chromium()}


def _kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _kill_stray_kernels(runtime_dir: Path) -> None:
    """Kernels run in their own session, so a SIGKILLed server leaves them behind. Find ours by
    the connection file (inside our private runtime dir) on their command line, and end them."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    needle = str(runtime_dir).encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (127.0.0.1 only)
        return response.read()


@pytest.fixture(scope="module")
def jupyter_lab(browser_tools, tmp_path_factory):
    """A private JupyterLab server serving the repository; yields {url, token, log}."""
    home = tmp_path_factory.mktemp("jupyter")
    dirs = {name: home / name for name in ("config", "data", "runtime", "settings", "workspaces",
                                           "ipython")}
    for d in dirs.values():
        d.mkdir()
    # User settings of this throw-away lab: no news/update toast or requests, no autosave, and
    # every cell kept in the DOM (no virtual scrolling) so the widget is always reachable.
    settings = {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                        "checkForUpdates": False},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }
    for name, values in settings.items():
        path = dirs["settings"] / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    token = secrets.token_hex(24)
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
           "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
           "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
           "IPYTHONDIR": str(dirs["ipython"]), "JUPYTER_TOKEN": token,
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", "--port=0",
           f"--ServerApp.root_dir={ROOT}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")      # containers and CI runners often run as root
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "jupyter-server.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # The server writes jpserver-<pid>.json (with the port it really bound) into our runtime
        # dir; port 0 lets the OS pick a free port, so no race with other processes.
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        url = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}; see {log_path}:\n"
                            + log_path.read_text(errors="replace")[-3000:], pytrace=False)
            info_files = sorted(dirs["runtime"].glob("jpserver-*.json"))
            if url is None and info_files:
                try:
                    info = json.loads(info_files[0].read_text())
                    url = f"http://127.0.0.1:{info['port']}"
                except (OSError, ValueError, KeyError):
                    pass  # being written; read it again
            if url is not None:
                try:
                    _get(f"{url}/api/status?token={token}")
                    break
                except OSError:
                    pass
            time.sleep(0.5)
        else:
            pytest.fail(f"jupyter lab did not answer within {SERVER_START_TIMEOUT_S}s; see "
                        f"{log_path}", pytrace=False)
        yield {"url": url, "token": token, "log": log_path}
    finally:
        _kill_group(server, grace_s=20)     # SIGTERM: the server shuts its kernels down first
        _kill_stray_kernels(dirs["runtime"])
        log.close()


def _notebook_copy(source: Path, folder: Path) -> Path:
    """``source`` without outputs, execution counts or saved widget state, written to ``folder``."""
    nb = json.loads(source.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target = folder / source.name
    target.write_text(json.dumps(nb, indent=1))
    return target


def _run_notebook(jupyter_lab, tools, notebook: Path, interaction: str, name: str, *,
                  node_timeout: int = NODE_TIMEOUT_S, cells_timeout: int = CELLS_TIMEOUT_S) -> dict:
    """Run the node script on a copy of ``notebook``; return its report (also saved as JSON)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=ARTIFACTS))
    try:
        copy = _notebook_copy(notebook, workdir)
        rel = copy.relative_to(ROOT).as_posix()
        screenshot = ARTIFACTS / f"{name}.png"
        for stale in (screenshot, ARTIFACTS / f"{name}-widget.png"):
            stale.unlink(missing_ok=True)
        # A workspace of its own per run: the server is shared by the tests, and the default
        # workspace would reopen the previous test's notebook, deleted by then (404s in the console).
        cmd = [tools["node"], str(SCRIPT), "--url",
               f"{jupyter_lab['url']}/lab/workspaces/{workdir.name}/tree/{rel}"
               f"?token={jupyter_lab['token']}",
               "--interaction", interaction, "--screenshot", str(screenshot),
               "--chromium", tools["chromium"], "--timeout", str(node_timeout),
               "--cells-timeout", str(cells_timeout)]
        # Own process group: on a hang, SIGTERM reaches node, whose playwright closes Chromium.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=node_timeout + 60)
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace_s=15)
            pytest.fail(f"{SCRIPT.name} hung for {node_timeout + 60}s", pytrace=False)
        finally:
            _kill_group(proc, grace_s=15)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"{SCRIPT.name} printed no JSON (exit {proc.returncode}); stderr:\n"
                    + stderr.decode(errors="replace")[-3000:], pytrace=False)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not report.get("ok"):
        pytest.fail(f"the browser run failed: {report.get('error')}\nsteps: {report.get('log')}\n"
                    f"report: {ARTIFACTS / (name + '.json')}, server log: {jupyter_lab['log']}",
                    pytrace=False)
    return report


def _console_errors(report: dict) -> list[str]:
    """Error-level browser console messages and uncaught page errors.

    No allow-list is needed today: with the news/update checks switched off, a clean JupyterLab
    4.6 + ipywidgets 8.1 run logs no errors. Add one here only for noise that provably does not
    come from the notebook or its widgets, with a comment saying why."""
    errors = [f"console.{m['type']}: {m['text']} ({m.get('url')})"
              for m in report.get("console", []) if m["type"] in ("error", "assert")]
    return errors + [f"uncaught: {e}" for e in report.get("pageErrors", [])]


def _assert_ran_cleanly(report: dict, where: str) -> None:
    """Every cell ran without an error, and the widget rendered (no "Error displaying widget")."""
    assert report["cellOutputs"]["errors"] == [], f"cells raised {where}"
    bad_stderr = [s for s in report["cellOutputs"]["stderr"]
                  if re.search(r"Traceback|Error\b", s["text"])]
    assert bad_stderr == [], f"cells printed errors to stderr {where}"
    # Errors raised inside a widget callback (parent message comm_msg) land in no cell: the
    # script listens to the kernel's iopub channel for them.
    kernel_errors = [p for p in report["kernelProblems"]
                     if p["type"] == "error" or re.search(r"Traceback|Error\b", p["text"])]
    assert kernel_errors == [], f"the kernel reported errors {where}"
    assert report["widgetErrors"] == [], f"a widget failed to render {where}"


SIGMA_LABEL = re.compile(r"^sigma = ([0-9.eE+-]+)$")


def _sigma(snapshot: dict) -> float:
    labels = [m.group(1) for text in snapshot["labels"] if (m := SIGMA_LABEL.match(text or ""))]
    assert len(labels) == 1, f"expected one 'sigma = X' label, got {snapshot['labels']}"
    return float(labels[0])


def test_noise_explorer_slider_in_jupyterlab(jupyter_lab, browser_tools):
    report = _run_notebook(jupyter_lab, browser_tools, ROOT / "notebooks" / "01_noising.ipynb",
                           interaction="sigma", name="01_noising-sigma")
    where = f"(report: {ARTIFACTS / '01_noising-sigma.json'})"
    _assert_ran_cleanly(report, where)

    before, after = report["before"], report["after"]
    for snap in (before, after):
        assert len(snap["images"]) == 1 and snap["images"][0]["naturalWidth"] > 0, snap["images"]
        assert snap["images"][0]["bytes"] > 1000, snap["images"]

    # Moving the slider to the right redrew the label and the image with a larger sigma.
    sigma_before, sigma_after = _sigma(before), _sigma(after)
    assert abs(sigma_before - 0.5) < 0.01, f"initial sigma {sigma_before}, expected about 0.5"
    assert sigma_after != pytest.approx(0.5, abs=0.01), f"sigma still {sigma_after} {where}"
    assert sigma_after > sigma_before, f"sigma {sigma_before} -> {sigma_after} {where}"
    assert before["labels"] != after["labels"]
    assert before["images"][0]["sha256"] != after["images"][0]["sha256"], \
        f"the image did not change when sigma moved {sigma_before} -> {sigma_after} {where}"
    assert after["sliders"][0]["readout"] == report["action"]["readout"]

    assert _console_errors(report) == [], f"browser console errors {where}"

    for shot in report["screenshots"]:
        assert Path(shot).stat().st_size > 10_000, f"screenshot {shot} is (nearly) empty"


PICKER_LABEL = re.compile(r"^(?P<klass>.+): seed (?P<seed>\d+), (?P<steps>\d+) Euler steps$")


def _picker(snapshot: dict) -> dict:
    """ClassSampler's state in a snapshot: its label parsed, the controls' values, the image."""
    labels = [m for text in snapshot["labels"] if (m := PICKER_LABEL.match(text or ""))]
    assert len(labels) == 1, \
        f"expected one 'CLASS: seed N, S Euler steps' label, got {snapshot['labels']}"
    dropdowns = [d["value"] for d in snapshot["dropdowns"] if d["description"] == "class"]
    seeds = [t["value"] for t in snapshot["texts"] if t["description"] == "seed"]
    assert len(dropdowns) == 1 and len(seeds) == 1, (snapshot["dropdowns"], snapshot["texts"])
    assert len(snapshot["images"]) == 1, snapshot["images"]
    image = snapshot["images"][0]
    assert image["naturalWidth"] > 0 and image["bytes"] > 1000, image
    label = labels[0]
    return {"label": label.group(0), "klass": label["klass"], "seed": int(label["seed"]),
            "steps": int(label["steps"]), "dropdown": dropdowns[0], "seed_box": seeds[0],
            "sha256": image["sha256"]}


def test_class_picker_in_jupyterlab(jupyter_lab, browser_tools):
    name = "04_class_conditioning-picker"
    report = _run_notebook(jupyter_lab, browser_tools,
                           ROOT / "notebooks" / "04_class_conditioning.ipynb",
                           interaction="picker", name=name,
                           node_timeout=PICKER_NODE_TIMEOUT_S, cells_timeout=PICKER_CELLS_TIMEOUT_S)
    where = f"(report: {ARTIFACTS / (name + '.json')})"
    _assert_ran_cleanly(report, where)

    action = report["action"]
    before, mid, after = (_picker(s) for s in (report["before"], action["mid"], report["after"]))
    # The notebook's picker starts on class 0 (T-shirt/top, which the report's bug sampled as
    # "no class") with seed 0 and 25 steps.
    assert (before["klass"], before["seed"], before["steps"]) == ("T-shirt/top", 0, 25), before
    assert (before["dropdown"], before["seed_box"]) == ("T-shirt/top", "0"), before

    # Picking the class redrew label and image for the new class, same seed.
    assert (mid["klass"], mid["seed"], mid["steps"]) == (action["class"], 0, 25), \
        f"after picking {action['class']}: {mid['label']!r} {where}"
    assert mid["dropdown"] == action["class"], mid
    assert mid["sha256"] != before["sha256"], f"the image did not change with the class {where}"

    # Typing the seed (Enter) redrew them again: new class and new seed in the label, a new image.
    expected = (action["class"], int(action["seed"]), 25)
    assert (after["klass"], after["seed"], after["steps"]) == expected, \
        f"after typing seed {action['seed']}: {after['label']!r} {where}"
    assert (after["dropdown"], after["seed_box"]) == (action["class"], action["seed"]), after
    assert after["label"] != before["label"]
    assert len({before["sha256"], mid["sha256"], after["sha256"]}) == 3, \
        f"the image did not change with the seed {where}"

    assert _console_errors(report) == [], f"browser console errors {where}"

    for shot in report["screenshots"]:
        assert Path(shot).stat().st_size > 10_000, f"screenshot {shot} is (nearly) empty"
