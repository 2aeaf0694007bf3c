"""The run queue's record, ``results[/<profile>]/pipeline.json``: the stages finished (seconds,
device, commit, what they measured, their key) and the last failure of any stage that has not
finished since, with ``timings.json`` (the seconds alone) beside it.

A record holds for a stage while its key (``stages.stage_key``) is unchanged, on any clone: the
models and scores it made are kept. The notebooks' record holds only in the checkout that
executed them, so that a fresh clone's ``make reproduce`` re-makes every figure.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from diffnb import runtime
from diffnb.results import atomic_write, exclusive


def state_path(profile: runtime.Profile) -> Path:
    return runtime.output_dir("results", profile) / "pipeline.json"


def _stored(profile: runtime.Profile, *, say: bool = False) -> dict:
    """The record as it is on disk, every stage in it."""
    path = state_path(profile)
    if not path.exists():
        return {"profile": profile.name, "stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        if say:
            print(f"pipeline: {path.name} is corrupt; starting from what is on disk",
                  file=sys.stderr)
        return {"profile": profile.name, "stages": {}}


def load_state(profile: runtime.Profile, *, keys: dict[str, str], say: bool = False) -> dict:
    """The finished stages whose key is still ``keys[name]`` (``stages.stage_keys``): a record
    made before the profile, a preset or a notebook changed is dropped (``say``: print so), and
    the queue runs that stage again, reusing the models and scores that still match."""
    state = _stored(profile, say=say)
    stale = sorted(k for k, v in state["stages"].items() if k in keys and v.get("key") != keys[k])
    if "notebooks" in state["stages"] and not executed_here(profile, keys.get("notebooks")):
        del state["stages"]["notebooks"]   # a fresh clone executes them again: make reproduce
    if stale and say:
        print(f"pipeline: {len(stale)} finished stages are out of date ({stale[0]}, ...): run "
              "again, reusing the models and scores that still match")
    state["stages"] = {k: v for k, v in state["stages"].items() if k not in stale}
    return state


def _here_stamp(profile: runtime.Profile) -> Path:
    return runtime.stamps_dir() / f"{profile.name}_notebooks_executed.json"


def executed_here(profile: runtime.Profile, key: str | None) -> bool:
    """Whether this checkout executed the notebooks of this key (:func:`mark_executed`). The
    other stages' records hold for any clone (their models and scores are kept); the notebooks'
    do not: a fresh clone's ``make reproduce`` re-makes every figure from the kept weights."""
    stamp = _here_stamp(profile)
    return key is not None and stamp.exists() and stamp.read_text() == key


def mark_executed(profile: runtime.Profile, key: str) -> None:
    atomic_write(_here_stamp(profile), key)


def update_state(profile: runtime.Profile, change, *, keys: dict[str, str]) -> dict:
    """``change(record)`` applied to the record as it is on disk now, under a lock, and saved;
    returns the record as :func:`load_state` reads it. Two queues side by side (``--only``
    stages that do not overlap, one queue per core) each add their own stages without writing
    over the other's; a record this checkout counts as out of date is kept on disk (the other
    queue may run other code) and only left out of what is returned."""
    with exclusive(f"pipeline-{profile.name}"):
        state = _stored(profile)
        change(state)
        save_state(profile, state)
    return load_state(profile, keys=keys)


def save_state(profile: runtime.Profile, state: dict) -> None:
    atomic_write(state_path(profile), json.dumps(state, indent=2, sort_keys=True) + "\n")
    stages = state["stages"]
    timings = {"profile": profile.name, "devices": sorted({s["device"] for s in stages.values()}),
               "commits": sorted({s["commit"] for s in stages.values() if "commit" in s}),
               "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
               "total_seconds": round(sum(v["seconds"] for v in stages.values()), 1)}
    atomic_write(runtime.output_dir("results", profile) / "timings.json",
                 json.dumps(timings, indent=2, sort_keys=True) + "\n")
