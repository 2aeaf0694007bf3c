"""Trainings side by side: the run queue's pending training stages in subprocesses of one thread
each, ``workers`` at a time, before the queue goes on in order (``pipeline --workers 2``).

On a CPU a training on two threads slows down badly as soon as anything else uses the other core;
two trainings of one thread each keep their speed and together beat one of two threads
(docs/cpus.md). Each subprocess is ``python -m diffnb.training PRESET`` with the queue's
profile and what is left of its deadline; a stage's presets run in order in one slot (class_3
goes on from class_1's run). After each training the finished models, or the resume point of a
cut one, are kept (``diffnb.run.weights``). The queue then finds the models finished and only
records them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from diffnb import config, runtime
from diffnb.run import stages, weights
from diffnb.training import checkpoints


def _scaled(name: str, profile: runtime.Profile) -> config.Preset:
    return config.scaled(config.get_preset(name), profile)


def pending(queue: list[stages.Stage], profile: runtime.Profile, *,
            state: dict) -> list[stages.Stage]:
    """The training stages of ``queue`` not recorded and not finished."""
    return [s for s in queue if s.kind == "train" and s.name not in state["stages"]
            and not all(checkpoints.is_finished(_scaled(n, profile), profile) for n in s.presets)]


def command(name: str, profile: runtime.Profile, *, left: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "diffnb.training", name, "--profile", profile.name]
    return cmd + ([] if left is None else ["--deadline", f"{left:.0f}"])


def train(todo: list[stages.Stage], profile: runtime.Profile, *, workers: int,
          deadline: float | None, threads: int = 1) -> dict[str, str]:
    """Train the presets of ``todo``, ``workers`` stages at a time, each subprocess on
    ``threads`` threads; ``deadline`` is a ``time.monotonic()`` value. Returns each stage's
    outcome: "finished", "cut" (by the deadline: its resume point is kept) or "failed (rc N)"."""
    lock, waiting, outcome = threading.Lock(), list(todo), {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), runtime.PROFILE_ENV: profile.name}

    def slot() -> None:
        while True:
            with lock:
                if not waiting:
                    return
                stage = waiting.pop(0)
            result = "finished"
            for name in stage.presets:
                if checkpoints.is_finished(_scaled(name, profile), profile):
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left < 1:
                    result = "cut"
                    break
                rc = subprocess.run(command(name, profile, left=left), env=env).returncode
                if rc:
                    result = f"failed (rc {rc})"
                    break
                if not checkpoints.is_finished(_scaled(name, profile), profile):
                    result = "cut"
                    break
            with lock:
                if profile.name in weights.KEPT_PROFILES:
                    weights.keep(profile)
                outcome[stage.name] = result
                print(f"pipeline: {stage.name} {result} (side by side)", flush=True)

    pool = [threading.Thread(target=slot, name=f"training slot {i}") for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return outcome
