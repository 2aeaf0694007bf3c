"""Plan this session on the borrowed GPU, deal its carries, print the calls to give the tool.

    .venv/bin/python scripts/gpu/prepare.py [full] [--device-minutes 15]

Here, at the start of a session that was lent a device (and again after a machine went cold):
reads what is done (``results/pipeline.json``, the kept weights of ``weights/full/`` written
back from git history, any resume point unpacked here), plans the session's calls
(``diffnb.sessions``: which stages should finish, sized to the device minutes), fetches what
those stages need and the machine lacks (the data; for scoring stages the wheels of
scripts/gpu/wheels.txt and the converted FID weights), deals it into carry folders .gpu/carry1,
.gpu/carry2, ... (each fits one command next to the tree) and prints the calls, in order.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

# This checkout's diffnb, not the one .venv was installed from (a scratch clone for a rehearsal
# shares the main checkout's .venv, whose editable install points there).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from diffnb import carry, data, runtime, sessions, stages, weights  # noqa: E402
from diffnb.results import atomic_write  # noqa: E402

ROOT = runtime.project_root()
GPU = ROOT / ".gpu"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# One GPU command, <= 2,000 characters: reassemble what was carried, install the wheels once per
# machine, run the queue until the deadline, pack what finished (and any resume point) into $OUT.
COMMAND = ("set -e; export PYTHONUNBUFFERED=1 DIFFNB_DATA_DIR=$PWD/.gpu/data "
           "PYTHONPATH=$PWD/.gpu/site:$PWD DIFFNB_COMMIT={commit}; nvidia-smi -L; "
           "python3 -m diffnb.transport receive --wheels .gpu/site; "
           "python3 -m diffnb.pipeline {profile} --deadline {deadline} --session-left {left} "
           "--session-queue {whole}{extra} || true; "
           "python3 -m diffnb.transport pack $OUT {profile} --since .gpu/received")


def wheels() -> dict[str, Path]:
    """The wheels of wheels.txt for the machine's Python, downloaded once; checked to hold, with
    what the image has (image.txt), every requirement they name."""
    folder = GPU / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    req = ROOT / "scripts/gpu/wheels.txt"
    want = carry.read_pins(req)
    found = {canonicalize_name(w.name.split("-")[0]): w for w in folder.glob("*.whl")}
    for name, w in list(found.items()):       # another version, or no longer carried: not carried
        if want.get(name) != w.name.split("-")[1]:
            w.unlink()
            del found[name]
    if set(want) - set(found):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder),
               "-r", str(req)] + [a for p in PLATFORMS for a in ("--platform", p)]
        subprocess.run(cmd, check=True)
        found = {canonicalize_name(w.name.split("-")[0]): w for w in folder.glob("*.whl")}
    problems = carry.unmet(want, carry.read_pins(ROOT / "scripts/gpu/image.txt"),
                           requires={n: carry.wheel_requires(w) for n, w in found.items()
                                     if n in want})
    if problems:
        sys.exit("prepare: the GPU machine would lack a package; add it to scripts/gpu/wheels.txt:\n  "
                 + "\n  ".join(problems))
    return {f".gpu/wheels/{w.name}": w for w in sorted(found.values())}


def data_files() -> dict[str, Path]:
    """The four Fashion-MNIST IDX files, wherever diffnb finds them here."""
    out = {}
    for split, stems in data.FILES.items():
        source = data.load(split).source
        folder = runtime.cache_dir("data") if source == "torchvision" else Path(source)
        for stem in stems:
            found = data._find(folder, stem)
            if found is None:
                sys.exit(f"prepare: cannot find {stem} in {folder}")
            out[f".gpu/data/{found.name}"] = found
    return out


def base(profile: runtime.Profile, pending: list[stages.Stage]) -> dict[str, dict[str, Path]]:
    out = {"data": data_files()}
    if any(stages.needs_fid(s) for s in pending):   # fetched only when a stage scores
        from diffnb import fid

        out["wheels"] = wheels()
        out["fid"] = {f".cache/fid/{fid.HALF_FILE}": fid.half_path()}   # one carry, not two
    return out


def print_forecast(profile: runtime.Profile, *, device_minutes: float,
                   skip: frozenset[str] = frozenset()) -> None:
    from diffnb import config, models

    with runtime.using_profile(profile):
        state = stages.load_state(profile)
        files = base(profile, stages.plan(profile))
        model_bytes, resume_bytes = {}, {}
        for name in stages.trained_presets(profile):
            preset = config.scaled(config.get_preset(name), profile)
            n = sum(p.numel() for p in models.build(preset.model).parameters())
            model_bytes[name] = 2 * n * len(weights.parts(preset, profile))
            # fp32 weights, Adam's two moments, the EMA if any (weights sizes: the same +-1%)
            resume_bytes[name] = 4 * n * (3 + bool(preset.train.ema_decay))
        sizes = {r: sum(f.stat().st_size for f in v.values()) for r, v in files.items()}
        plans = {k: sessions.forecast(profile, state, base_bytes=sizes, model_bytes=model_bytes,
                                      resume_bytes=resume_bytes, device_minutes=device_minutes,
                                      tree_bytes=carry.tree_bytes(ROOT), skip=k)
                 for k in (skip, skip | {"notebooks"})}
        plan = plans[skip]
    print(f"Forecast ({device_minutes:g} device minutes a session; estimates, "
          f"{sessions.START_S} s to start a machine, {sessions.COMMAND_S + sessions.GAP_S} s "
          "per call besides its queue time):\n")
    print("| session | call | carries MiB | --deadline s | expected to finish |\n|---|---|---|---|"
          "---|")
    for k, calls in enumerate(plan, 1):
        for c in calls:
            print(f"| {k} | {c.number} | {c.carry_bytes / carry.MIB:.1f} | {c.deadline_s} | "
                  f"{', '.join(c.finishes) or '-'} |")
    done = {s for calls in plan for c in calls for s in c.finishes}
    left = [s.name for s in stages.plan(profile)
            if s.name not in set(state["stages"]) | done | skip]
    print(f"\n{len(plan)} sessions; " + (f"not planned: {', '.join(left)}" if left else
                                         "every stage planned")
          + ("" if "notebooks" in skip else f"; {len(plans[skip | {'notebooks'}])} with the "
             "notebooks executed here on the CPU afterwards (--notebooks-here; runbook, step 5)"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", nargs="?", default="full", choices=sorted(runtime.PROFILES))
    p.add_argument("--device-minutes", type=float, default=15.0,
                   help="device time of this session (the tool's status: budget_left_s / 60)")
    p.add_argument("--compile", default="", help="passed to the pipeline (e.g. reduce-overhead)")
    p.add_argument("--forecast", action="store_true", help="print every session the rest of the "
                   "run needs (estimates) and exit; nothing is dealt")
    p.add_argument("--notebooks-here", action="store_true", help="leave the notebooks out of the "
                   "GPU's plan: they run here on the CPU once every other stage is done")
    args = p.parse_args()
    profile = runtime.PROFILES[args.profile]
    skip = frozenset({"notebooks"} if args.notebooks_here else ())
    if args.forecast:
        return print_forecast(profile, device_minutes=args.device_minutes, skip=skip)
    with runtime.using_profile(profile):
        restored = weights.restore(profile)
        state = stages.load_state(profile)
        pending = [s for s in stages.plan(profile) if s.name not in state["stages"]
                   and s.name not in skip]
        tree = carry.tree_bytes(ROOT)
        plan = sessions.plan_session(profile, state, base=base(profile, pending),
                                     tree_bytes=tree, device_minutes=args.device_minutes,
                                     skip=skip)
    room = carry.CARRY_LIMIT - tree - 2 * carry.MIB
    carry.deal(plan.files, GPU, budget=room)
    commit = runtime.code_commit()
    if commit.endswith("+dirty") or commit == "unknown":
        print(f"prepare: warning: the code is at {commit}: commit first, so that the kept "
              "weights name the commit they were trained at")
    extra = f" --compile {args.compile}" if args.compile else ""
    total = sum(f.stat().st_size for f in plan.files.values())
    print(f"prepare: {len(state['stages'])} stages done, {len(pending)} pending; kept weights "
          f"{restored}; tree {tree / carry.MIB:.1f} MiB, so <= {room / carry.MIB:.1f} MiB "
          f"carried per call; {len(plan.files)} files, {total / carry.MIB:.1f} MiB to carry")
    print(f"Estimates: {plan.rate}.\n")
    print(f"Session plan ({args.device_minutes:g} device minutes: ~{sessions.START_S} s to start,"
          f" ~{sessions.COMMAND_S + sessions.GAP_S} s per call besides its queue time):")
    runbook = []
    for c in plan.calls:
        command = COMMAND.format(profile=profile.name, deadline=c.deadline_s,
                                 left=c.session_left_s, whole=sessions.fresh_queue_s(),
                                 extra=extra, commit=commit)
        carries = [c.carry] if c.carry else []
        runbook.append({"carry": carries, "timeout_s": 600, "command": command})
        print(f"  call {c.number}: carry {c.carry or '-'} ({c.carry_bytes / carry.MIB:.1f} MiB), "
              f"--deadline {c.deadline_s} --session-left {c.session_left_s}; expected to "
              f"finish: {', '.join(c.finishes) or '-'}"
              + (f"; goes on with {c.works_on[-1]}" if c.works_on and c.works_on[-1]
                 not in c.finishes else ""))
    print(f"  after this session: {len(plan.left_after)} stages left"
          + (f" (next: {plan.left_after[0]})" if plan.left_after else " (all done)"))
    print("\nGive the device tool these calls back to back (it stays warm 30 s): "
          ".gpu/runbook.json holds each call's carry and command. After each reply, in the same "
          "turn as the next call: .venv/bin/python -m diffnb.transport unpack <files_at>. Before "
          "a call, if status's budget_left_s is below the planned --session-left plus ~90 s per "
          "call left, lower --session-left to that.")
    print(f"\nCOMMAND of call 1 ({len(runbook[0]['command'])} characters):\n"
          f"{runbook[0]['command']}" if runbook else "\nNothing to run in this session.")
    atomic_write(GPU / "runbook.json", json.dumps({"calls": runbook}, indent=1) + "\n")


if __name__ == "__main__":
    main()
