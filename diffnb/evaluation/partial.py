"""Samples of a scoring cut short, kept as plain files, so that any machine goes on from them.

A long scoring does not fit one sitting on a CPU: the standard protocol's 10,000 samples at 50
sampler steps take hours on one core. In a kept profile (``runtime.KEPT_PROFILES``) the samples
are therefore drawn stream by stream, one sampler batch at a time, and each batch is added to
``results/<profile>/partial/<digest>/<class{c}|none>_seed<seed>.npz`` as it comes. A scoring
stopped by the run's deadline (:class:`ScoringCut`) leaves those files behind; run again, here
or on another machine, it reads them instead of drawing those samples again. Once its score is
written, its files are removed (:meth:`Store.clear`), as a finished training's resume point is.

``digest`` hashes what decides a sample apart from the machine: the weights' fingerprint, the
sampler and its noise schedule. The samples are stored in fp16 (about 2 KB each at 32x32); rows
read back are therefore rounded to fp16 (a relative 5e-4), less than a sample changes between a
bf16 and an fp32 sampler. Each file lists the machines that drew its rows, and the score says
how many rows it read back (``resumed_images``).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from diffnb.results import atomic_write

_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
_deadline: ContextVar[float | None] = ContextVar("scoring_deadline", default=None)


class ScoringCut(Exception):
    """A scoring stopped at the run's deadline; its samples so far are in the partial store."""


@contextmanager
def deadline(at: float | None):
    """Scorings inside stop before a sampler batch that would start after ``at`` (a
    ``time.monotonic()`` value; None: no deadline)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline(what: str) -> None:
    """Raise :class:`ScoringCut` once the deadline set by :func:`deadline` has passed."""
    at = _deadline.get()
    if at is not None and time.monotonic() >= at:
        raise ScoringCut(f"{what}: stopped at the deadline; the samples drawn so far are kept "
                         "under results/<profile>/partial/, run the same command again to go on")


def _text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


class Store:
    """The kept samples of one sampler key: per stream (class, seed) a run of rows that starts
    at row ``first`` of the stream (0 unless the stream's first rows came from elsewhere)."""

    def __init__(self, root: Path, key: dict, *, device: str):
        self.key, self.device = key, device
        self.folder = Path(root) / hashlib.sha256(_text(key).encode()).hexdigest()[:16]

    def path(self, label: int | None, seed: int) -> Path:
        stream = "none" if label is None else f"class{int(label)}"
        return self.folder / f"{stream}_seed{int(seed)}.npz"

    def load(self, label: int | None, seed: int) -> tuple[int, torch.Tensor, list] | None:
        """(first, rows as fp32, [[rows, device], ...]) of a stream, or None (missing, cut short,
        or another key under the same name)."""
        try:
            with np.load(self.path(label, seed)) as saved:
                key, rows = str(saved["key"]), saved["samples"]
                first, drawn_on = int(saved["first"]), json.loads(str(saved["drawn_on"]))
        except _UNREADABLE:
            return None
        if key != _text({**self.key, "label": label, "seed": seed}):
            return None
        return first, torch.from_numpy(rows.astype(np.float32)), drawn_on

    def save(self, label: int | None, seed: int, *, first: int, rows: torch.Tensor,
             drawn_on: list) -> None:
        """Keep rows ``first..first+len(rows)-1`` of a stream, atomically."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, key=np.array(_text({**self.key, "label": label, "seed": seed})),
                            samples=rows.detach().cpu().numpy().astype(np.float16),
                            first=np.array(first), drawn_on=np.array(_text(drawn_on)))
        atomic_write(self.path(label, seed), buffer.getvalue())

    def clear(self) -> None:
        """Remove this key's files (its score is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()       # partial/ itself, once empty
        except OSError:
            pass


def draw(store: Store, sample, *, label: int | None, seed: int, start: int, n: int,
         batch: int) -> tuple[torch.Tensor, int]:
    """Rows ``start..n-1`` of a stream: those kept in ``store``, the rest drawn ``batch`` rows at
    a time by ``sample(start, stop)`` and kept after each batch. Returns (rows, how many were
    read back). Checks the deadline before each batch."""
    kept = store.load(label, seed)
    first, rows, drawn_on = (start, torch.empty(0), []) if kept is None else kept
    if start > first + len(rows) or first >= n:     # not a run this request can extend
        first, rows, drawn_on = start, torch.empty(0), []
    resumed = max(0, min(first + len(rows), n) - max(first, start))
    if first > start:   # the kept run starts later (its first rows were in another cache)
        head = []
        for a in range(start, first, batch):
            check_deadline(f"scoring class {label}, seed {seed} at sample {a} of {n}")
            head.append(sample(a, min(first, a + batch)))
        drawn_on = [[first - start, store.device], *drawn_on]
        rows, first = torch.cat([*head, rows]), start
        store.save(label, seed, first=first, rows=rows, drawn_on=drawn_on)
    done = first + len(rows)
    while done < n:
        check_deadline(f"scoring class {label}, seed {seed} at sample {done} of {n}")
        stop = min(n, done + batch)
        new = sample(done, stop)
        rows = new if len(rows) == 0 else torch.cat([rows, new])
        if drawn_on and drawn_on[-1][1] == store.device:
            drawn_on[-1][0] += len(new)
        else:
            drawn_on.append([len(new), store.device])
        store.save(label, seed, first=first, rows=rows, drawn_on=drawn_on)
        done = stop
    return rows[start - first:n - first], resumed
