"""Samples of a scoring cut short, kept as plain files, so that any machine goes on from them.

A long scoring does not fit one sitting on a CPU: the standard protocol's 10,000 samples at 50
sampler steps take hours on one core. In a kept profile (``runtime.KEPT_PROFILES``) a CPU
therefore draws the samples stream by stream, one sampler batch at a time, and adds each batch to
``results/<profile>/partial/<digest>/<class{c}|none>_seed<seed>.npz`` as it comes. A scoring
stopped by the run's deadline (:class:`ScoringCut`) leaves those files behind; run again, here
or on another machine, it reads them instead of drawing those samples again. Once its score is
written, the files it used up are removed (:meth:`Store.forget`), as a finished training's
resume point is. (On a GPU a scoring takes minutes, and its batches are shared by many streams:
nothing is kept there.)

``digest`` hashes what decides a sample apart from the machine: the weights' fingerprint, the
sampler, its noise schedule and torch's version. The samples are stored in fp16 (about 2 KB each
at 32x32); rows read back are therefore rounded to fp16 (a relative 5e-4), less than a sample
changes between a bf16 and an fp32 sampler. Each file lists the machines that drew its rows, the
score says how many rows it read back from which machine (``resumed_images``), and features of
a stream with rows drawn elsewhere stay out of this machine's feature cache.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from diffnb.results import atomic_write

_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
_run: ContextVar[dict | None] = ContextVar("scoring_run", default=None)


class ScoringCut(Exception):
    """A scoring stopped at the run's deadline; its samples so far are in the partial store.
    ``progressed``: whether this call kept any new batch before stopping."""

    def __init__(self, message: str, *, progressed: bool):
        super().__init__(message)
        self.progressed = progressed


@contextmanager
def deadline(at: float | None):
    """Scorings inside stop before a sampler batch that would start after ``at`` (a
    ``time.monotonic()`` value; None: no deadline). Yields a tally: ``drawn``, the samples
    kept by this call, and ``resumed``, those read back from an earlier call's files."""
    tally = {"at": at, "drawn": 0, "resumed": 0}
    token = _run.set(tally)
    try:
        yield tally
    finally:
        _run.reset(token)


def _count(what: str, n: int) -> None:
    tally = _run.get()
    if tally is not None:
        tally[what] += n


def check_deadline(what: str) -> None:
    """Raise :class:`ScoringCut` once the deadline set by :func:`deadline` has passed."""
    tally = _run.get()
    if tally is not None and tally["at"] is not None and time.monotonic() >= tally["at"]:
        raise ScoringCut(f"{what}: the samples drawn so far are kept under "
                         "results/<profile>/partial/", progressed=tally["drawn"] > 0)


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

    def _stream_key(self, label: int | None, seed: int) -> str:
        return _text({**self.key, "label": None if label is None else int(label),
                      "seed": int(seed)})

    def load(self, label: int | None, seed: int) -> tuple[int, torch.Tensor, list] | None:
        """(first, rows as fp32, [[rows, device], ...]) of a stream, or None (missing, cut short,
        or another key under the same name)."""
        try:
            with np.load(self.path(label, seed)) as saved:
                key, rows = str(saved["key"]), saved["samples"]
                first, drawn_on = int(saved["first"]), json.loads(str(saved["drawn_on"]))
        except _UNREADABLE:
            return None
        if key != self._stream_key(label, seed):
            return None
        return first, torch.from_numpy(rows.astype(np.float32)), drawn_on

    def save(self, label: int | None, seed: int, *, first: int, rows: torch.Tensor,
             drawn_on: list) -> None:
        """Keep rows ``first..first+len(rows)-1`` of a stream, atomically."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, key=np.array(self._stream_key(label, seed)),
                            samples=rows.detach().cpu().numpy().astype(np.float16),
                            first=np.array(first), drawn_on=np.array(_text(drawn_on)))
        atomic_write(self.path(label, seed), buffer.getvalue())

    def forget(self, used: dict) -> None:
        """Remove the files of the streams a written score used (``{(label, seed): n}``), where
        the kept run ends within the n it used; a longer run another scoring needs stays."""
        for (label, seed), n in used.items():
            kept = self.load(label, seed)
            if kept is not None and kept[0] + len(kept[1]) <= n:
                self.path(label, seed).unlink(missing_ok=True)
        for folder in (self.folder, self.folder.parent):     # <digest>/, then partial/
            try:
                folder.rmdir()
            except OSError:
                break


def _batches(sample, start: int, stop: int, batch: int, what: str):
    """``sample(a, b)`` over start..stop-1, ``batch`` rows at a time, the deadline checked
    before each."""
    for a in range(start, stop, batch):
        check_deadline(f"{what} at sample {a}")
        yield sample(a, min(stop, a + batch))


def draw(store: Store, sample, *, label: int | None, seed: int, start: int, n: int,
         batch: int) -> tuple[torch.Tensor, list]:
    """Rows ``start..n-1`` of a stream: those kept in ``store``, the rest drawn ``batch`` rows at
    a time by ``sample(start, stop)`` and kept after each batch. Returns (rows, the machines of
    the rows read back: [[rows, device], ...]). Checks the deadline before each batch."""
    what = f"scoring class {label}, seed {seed} ({n} samples)"
    kept = store.load(label, seed)
    if kept is not None and kept[0] > n:   # a run further on, for a longer scoring: left alone
        return torch.cat(list(_batches(sample, start, n, batch, what))), []
    first, rows, drawn_on = (start, torch.empty(0), []) if kept is None else kept
    lo, hi = max(first, start), min(first + len(rows), n)
    resumed = _share(drawn_on, skip=lo - first, take=hi - lo)
    _count("resumed", sum(count for count, _ in resumed))
    if first > start:   # the kept run starts later (its first rows were in another cache)
        head = list(_batches(sample, start, first, batch, what))
        drawn_on = [[first - start, store.device], *drawn_on]
        rows, first = torch.cat([*head, rows]), start
        store.save(label, seed, first=first, rows=rows, drawn_on=drawn_on)
    for new in _batches(sample, first + len(rows), n, batch, what):
        rows = new if len(rows) == 0 else torch.cat([rows, new])
        if drawn_on and drawn_on[-1][1] == store.device:
            drawn_on[-1][0] += len(new)
        else:
            drawn_on.append([len(new), store.device])
        store.save(label, seed, first=first, rows=rows, drawn_on=drawn_on)
        _count("drawn", len(new))
    return rows[start - first:n - first], resumed


def _share(drawn_on: list, *, skip: int, take: int) -> list:
    """The [[rows, device], ...] of ``take`` rows after the first ``skip`` of a kept run."""
    out = []
    for rows, device in drawn_on:
        part = max(0, min(rows - skip, take))
        skip, take = max(0, skip - rows), take - part
        if part:
            out.append([part, device])
    return out
