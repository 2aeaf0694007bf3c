"""tests/conftest.py's ordering: browser-marked tests run after everything else (notebooks too)."""
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_browser_tests_are_moved_after_the_rest(tmp_path):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_a_browser.py").write_text(
        "import pytest\npytestmark = pytest.mark.browser\n\ndef test_widget():\n    pass\n")
    (tmp_path / "test_b_plain.py").write_text(
        "def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    (tmp_path / "other").mkdir()                          # a second path, as `tests notebooks`
    (tmp_path / "other" / "test_c_later.py").write_text("def test_three():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "--collect-only", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                          "test_a_browser.py", "test_b_plain.py", "other"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    order = [line for line in run.stdout.splitlines() if "::" in line]
    assert len(order) == 4 and order[-1] == "test_a_browser.py::test_widget", order
    plain = [name for name in order if "browser" not in name]   # the rest keep their order
    assert plain.index("test_b_plain.py::test_one") < plain.index("test_b_plain.py::test_two")
