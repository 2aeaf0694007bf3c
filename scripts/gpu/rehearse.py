"""Rehearse this session's GPU calls here, as the device tool would run them, before paying for them.

    .venv/bin/python scripts/gpu/rehearse.py --python /tmp/devenv/bin/python [--cold] [--calls 1 2]

Reads ``.gpu/runbook.json`` (written by ``prepare.py``) and runs each call the way the device
tool does (its README): in a machine folder that holds a copy of the working tree (tracked files
and the untracked ones git does not ignore) and the call's carried paths, ``bash -c <command>``
with ``$OUT`` an empty folder, a bare environment, ``python3`` the interpreter given (set one up
with the GPU image's packages and none of the carried wheels' ones: torch 2.11, Python 3.12;
scripts/gpu/README.md says how) and ``nvidia-smi`` a stand-in. A warm machine keeps what earlier
calls wrote there; ``--cold`` starts every call on a fresh one. After each call it checks what
came back against the tool's limits (8 files of 16 MiB) and unpacks it here, as the runbook says.

Run it in a scratch clone with a small profile (``prepare.py tiny``): the queue then runs on this
CPU under the device's own command lines, packages and Python, so an import that the image lacks,
a wheel that does not install or a command that fails shows up here, not in device time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BACK_FILES, BACK_BYTES = 8, 16 * MIB    # the device tool's limits on what comes back
STAND_IN = "#!/bin/sh\necho 'GPU 0: none (rehearsal on the CPU, scripts/gpu/rehearse.py)'\n"


def tree_files(root: Path) -> list[str]:
    """What the device tool copies of the working tree: tracked + untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (root / p).is_file()]


def sync(machine: Path, carry: list[str], *, root: Path = ROOT) -> None:
    """Copy the tree and the call's carries into the machine folder (carries replace paths)."""
    for rel in tree_files(root):
        dest = machine / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest)
    for rel in carry:
        dest = machine / rel
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(root / rel, dest)


def call(machine: Path, command: str, *, python: Path, timeout: int) -> tuple[int, Path, float]:
    """One command as the device runs it; returns its exit status, its $OUT and its seconds."""
    bin_dir, out = machine.parent / "bin", Path(tempfile.mkdtemp(prefix="out-", dir=machine.parent))
    bin_dir.mkdir(exist_ok=True)
    (machine.parent / "home").mkdir(exist_ok=True)
    # a wrapper, not a link: a virtual environment's python finds its pyvenv.cfg by its own path
    for name, text in (("python3", f'#!/bin/sh\nexec "{python}" "$@"\n'), ("nvidia-smi", STAND_IN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(machine.parent / "home"),
           "OUT": str(out), "LANG": "C.UTF-8"}
    t0 = time.time()
    try:
        rc = subprocess.run(["bash", "-c", command], cwd=machine, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, out, time.time() - t0


def check_back(out: Path) -> list[str]:
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{p.name}: {p.stat().st_size / MIB:.1f} MiB > 16 MiB" for p in files
                if p.stat().st_size > BACK_BYTES]
    if len(files) > BACK_FILES:
        problems.append(f"{len(files)} files back > {BACK_FILES}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, type=Path, help="the device-like interpreter")
    ap.add_argument("--cold", action="store_true", help="a fresh machine for every call")
    ap.add_argument("--calls", type=int, nargs="*", help="1-based call numbers (default: all)")
    ap.add_argument("--machine", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    ap.add_argument("--no-unpack", action="store_true", help="leave what came back in $OUT")
    args = ap.parse_args(argv)
    book = json.loads((args.root / ".gpu" / "runbook.json").read_text())["calls"]
    chosen = args.calls or list(range(1, len(book) + 1))
    base = args.machine or Path(tempfile.mkdtemp(prefix="diffnb-rehearsal-"))
    machine, ok = base / "repo", 0
    for k in chosen:
        spec = book[k - 1]
        if args.cold:
            shutil.rmtree(machine, ignore_errors=True)
        machine.mkdir(parents=True, exist_ok=True)
        sync(machine, spec.get("carry", []), root=args.root)
        print(f"rehearse: call {k}/{len(book)} in {machine}", flush=True)
        rc, out, seconds = call(machine, spec["command"], python=args.python.absolute(),
                                timeout=spec.get("timeout_s", 600))
        problems = check_back(out) + ([f"exit status {rc}"] if rc else [])
        print(f"rehearse: call {k} took {seconds:.0f} s; " + ("; ".join(problems) or "ok"), flush=True)
        if not args.no_unpack:
            unpack = subprocess.run([sys.executable, "-m", "diffnb.transport", "unpack", str(out)],
                                    cwd=args.root)
            problems += ["unpack failed"] if unpack.returncode else []
        if problems:
            print(f"rehearse: call {k} failed; the calls after it were not run")
            break
        ok += 1
    print(f"rehearse: {ok}/{len(chosen)} calls ok")
    return 0 if ok == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
