"""Inception features of generated images, cached on disk by what determines the images exactly.

A sampler's draw of class ``label`` (None: no class) with seed ``seed`` is a *stream*: sample i
starts from its own seed (``sampling.sample_seeds(seed, n)[i]``), so the draw of n samples is
the first n samples of any longer draw. The cache holds the features of a prefix 0..m-1 of each
stream, in ``.cache/fid/generated/<digest>/<class{c}|none>_seed<seed>.npz``, where ``digest``
hashes the sampler's key (weights fingerprint, sampler spec, devices, torch version, features
tag); each file also stores its whole key, and one that does not read back whole (a write cut
short) or holds another key is treated as missing, so it is recomputed, never trusted.

Writes go through :func:`diffnb.results.atomic_write`: two processes writing the same stream at
once each rename a whole file and the last one wins; both hold the same numbers, since a
stream's features do not depend on which process computed them. A save never replaces a longer
prefix by a shorter one.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from diffnb import runtime
from diffnb.fid.reference import features_tag
from diffnb.results import atomic_write

_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)  # missing or cut short


def store_dir() -> Path:
    """``.cache/fid/generated/`` (git-ignored: a fresh clone recomputes every feature)."""
    return runtime.cache_dir("fid") / "generated"


def _text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def stream_key(sampler: dict, *, label: int | None, seed: int) -> dict:
    """The whole key of one stream: the sampler's key, the features tag, the class and seed."""
    return {**sampler, "features_tag": features_tag(), "label": label, "seed": seed}


def stream_path(sampler: dict, *, label: int | None, seed: int) -> Path:
    """Where a stream's features live: one folder per sampler key, one file per stream."""
    digest = hashlib.sha256(_text({**sampler, "features_tag": features_tag()}).encode())
    stream = "none" if label is None else f"class{int(label)}"
    return store_dir() / digest.hexdigest()[:16] / f"{stream}_seed{int(seed)}.npz"


def load(sampler: dict, *, label: int | None, seed: int) -> np.ndarray | None:
    """The cached features (m, D) of a stream's first m samples, or None (missing, cut short,
    or another key under the same name)."""
    path = stream_path(sampler, label=label, seed=seed)
    try:
        with np.load(path) as saved:
            key, feats = str(saved["key"]), saved["features"]
    except _UNREADABLE:
        return None
    if key != _text(stream_key(sampler, label=label, seed=seed)) or feats.ndim != 2:
        return None
    return feats


def save(sampler: dict, *, label: int | None, seed: int, feats: np.ndarray) -> Path:
    """Store the features of a stream's first ``len(feats)`` samples, atomically, unless the
    cache already holds at least as many (another process got further)."""
    path = stream_path(sampler, label=label, seed=seed)
    have = load(sampler, label=label, seed=seed)
    if have is not None and len(have) >= len(feats):
        return path
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(_text(stream_key(sampler, label=label, seed=seed))),
             features=np.ascontiguousarray(feats))
    return atomic_write(path, buffer.getvalue())
