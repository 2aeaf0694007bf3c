"""Files kept in git history, out of the working tree (the GPU run's weights, ``diffnb.weights``).

Every tracked file travels with each command to the borrowed GPU (64 MiB per command, the tree
included), so tens of MiB of weights cannot sit in the tree. They are committed once, in a commit
of their own (A), and taken out of the tree by the next one (B), which keeps only their manifest:
the bytes stay reachable from the branch through A, and any clone with history reads them back
by their git blob id (``git cat-file``). Only plumbing is used: the user's index and working tree
are left as they were, other staged changes included.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from diffnb.results import atomic_write


class GitStoreError(RuntimeError):
    pass


def blob_id(data: bytes) -> str:
    """The id git gives a blob of ``data`` (``git hash-object``), computed without git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git(root: Path, *args: str, data: bytes | None = None, env: dict | None = None) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, input=data, capture_output=True,
                             check=True, env={**os.environ, **(env or {})})
    except FileNotFoundError as err:
        raise GitStoreError("git is not installed: install it to read the kept weights") from err
    except subprocess.CalledProcessError as err:
        raise GitStoreError(f"git {' '.join(args[:2])} failed in {root}: "
                            f"{err.stderr.decode(errors='replace').strip()} (fix what git says, "
                            "then run again)") from err
    return out.stdout.decode().strip()


def available(root: Path) -> bool:
    """Whether ``root`` is inside a git repository (not so a tree copied to a borrowed GPU)."""
    try:
        _git(root, "rev-parse", "--git-dir")
    except GitStoreError:
        return False
    return True


def read_blob(root: Path, blob: str) -> bytes:
    """The bytes of ``blob`` from the repository at ``root``, with advice when it is absent."""
    try:
        _git(root, "cat-file", "-e", blob)
    except GitStoreError as err:
        raise GitStoreError(
            f"git blob {blob} is not in the repository at {root} ({err}). The kept weights live "
            "in git history: use a full clone (not a shallow one: `git fetch --unshallow`), and "
            "merge branches that kept weights with a merge commit, never a squash") from err
    out = subprocess.run(["git", "cat-file", "blob", blob], cwd=root, capture_output=True,
                         check=True)
    return out.stdout


def reachable(root: Path, blob: str) -> bool:
    try:
        _git(root, "cat-file", "-e", blob)
    except GitStoreError:
        return False
    return True


def _tree(root: Path, base: str, *, add: dict[str, bytes], remove: list[str]) -> str:
    """A tree object: ``base``'s tree with ``add`` ({path: bytes}) written and ``remove`` gone,
    built in a temporary index."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(root, "read-tree", base, env=env)
        for path in remove:
            _git(root, "update-index", "--force-remove", "--", path, env=env)
        for path, data in add.items():
            blob = _git(root, "hash-object", "-w", "--stdin", data=data)
            _git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        return _git(root, "write-tree", env=env)


def commit_out_of_tree(root: Path, files: dict[str, bytes], *, manifest: str,
                       manifest_text, messages: tuple[str, str]) -> tuple[str, str]:
    """Commit ``files`` ({path: bytes}) in commit A on top of HEAD, then commit B on top of A
    without them and with ``manifest`` (path) = ``manifest_text(A)``; move HEAD's branch to B.
    The manifest is written to the working tree and the index too, so ``git status`` stays as
    it was. Returns (A, B)."""
    head = _git(root, "rev-parse", "HEAD")
    a = _git(root, "commit-tree", _tree(root, head, add=files, remove=[]), "-p", head,
             "-m", messages[0])
    text = manifest_text(a)
    b = _git(root, "commit-tree", _tree(root, a, add={manifest: text.encode()},
                                        remove=list(files)), "-p", a, "-m", messages[1])
    _git(root, "update-ref", "-m", "diffnb.weights: kept out of the tree", "HEAD", b, head)
    atomic_write(root / manifest, text)
    _git(root, "reset", "-q", "--", manifest)
    return a, b
