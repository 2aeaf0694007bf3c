"""scripts/gpu/rehearse.py runs a runbook's calls as the device tool does: the tree (tracked and
untracked-not-ignored files) plus the call's carries, ``python3`` the interpreter given, a bare
environment with ``$OUT``; it checks what comes back against the tool's limits and stops at the
first call that fails."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "rehearse.py"


@pytest.fixture
def rehearse():
    spec = importlib.util.spec_from_file_location("rehearse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkout(root: Path, commands: list[str]) -> None:
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".gitignore").write_text("/.gpu/\n/checkpoints/\n")
    (root / "tracked.txt").write_text("t")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    (root / "untracked.txt").write_text("u")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "ignored.pt").write_text("i")
    (root / ".gpu" / "carry1").mkdir(parents=True)
    (root / ".gpu" / "carry1" / "000-000.bin").write_text("c")
    calls = [{"carry": [".gpu/carry1"] if k == 0 else [], "timeout_s": 60, "command": c}
             for k, c in enumerate(commands)]
    (root / ".gpu" / "runbook.json").write_text(json.dumps({"calls": calls}))


def test_a_call_sees_the_tree_its_carries_and_the_given_python_not_ignored_files(
        rehearse, tmp_path, capsys):
    root, machine = tmp_path / "repo", tmp_path / "machine"
    look = ("set -e; ls -A > $OUT/files; python3 -c 'import sys; print(sys.prefix)' > $OUT/prefix; "
            "nvidia-smi -L > $OUT/gpu; env | cut -d= -f1 | sort > $OUT/env")
    _checkout(root, [look, "set -e; test -f .gpu/carry1/000-000.bin; ls > $OUT/second"])
    rc = rehearse.main(["--python", sys.executable, "--root", str(root), "--machine", str(machine),
                        "--no-unpack"])
    assert rc == 0 and "2/2 calls ok" in capsys.readouterr().out
    out = sorted(p for p in machine.glob("out-*") if (p / "files").exists())[0]
    files = set((out / "files").read_text().split())
    assert {"tracked.txt", "untracked.txt", ".gitignore", ".gpu"} <= files
    assert "checkpoints" not in files                      # ignored and not carried: not there
    assert (out / "prefix").read_text().strip() == sys.prefix
    assert "rehearsal" in (out / "gpu").read_text()
    assert "DIFFNB_PROFILE" not in (out / "env").read_text().split()   # a bare environment


def test_a_failing_call_or_too_much_back_stops_the_rehearsal(rehearse, tmp_path, capsys):
    root = tmp_path / "repo"
    _checkout(root, ["for i in 1 2 3 4 5 6 7 8 9; do echo $i > $OUT/part$i; done",
                     "echo never > $OUT/x"])
    rc = rehearse.main(["--python", sys.executable, "--root", str(root),
                        "--machine", str(tmp_path / "m1"), "--no-unpack"])
    said = capsys.readouterr().out
    assert rc == 1 and "9 files back > 8" in said and "0/2 calls ok" in said
    assert "call 2/2" not in said

    (root / ".gpu" / "runbook.json").write_text(json.dumps(
        {"calls": [{"carry": [], "timeout_s": 60, "command": "exit 3"}]}))
    rc = rehearse.main(["--python", sys.executable, "--root", str(root),
                        "--machine", str(tmp_path / "m2"), "--no-unpack"])
    assert rc == 1 and "exit status 3" in capsys.readouterr().out


def test_what_comes_back_is_held_to_the_tools_limits(rehearse, tmp_path):
    (tmp_path / "big").write_bytes(b"\0" * (16 * (1 << 20) + 1))
    (tmp_path / "small").write_bytes(b"x")
    assert rehearse.check_back(tmp_path) == ["big: 16.0 MiB > 16 MiB"]
