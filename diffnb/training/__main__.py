"""Train one preset from the command line, in one process or several (in the style of NVlabs/edm's
train.py: the arguments, the process group, then the package's one training loop).

    python -m diffnb.training class_2 --profile quick
    torchrun --standalone --nproc_per_node=2 -m diffnb.training unet --profile full
    torchrun --standalone --nproc_per_node=2 -m diffnb.training unet --set train.batch_size=256

Under torchrun every process trains its shard of each global batch with DistributedDataParallel
(nccl on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on the CPU); rank 0 writes the
checkpoints. The run resumes from its folder's last checkpoint, with any number of processes.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from dataclasses import fields, replace

from diffnb import config, runtime, training
from diffnb.config import Preset
from diffnb.training import distributed


def preset_from(name: str, *, profile: runtime.Profile, sets=()) -> Preset:
    """The preset ``name`` scaled to ``profile``, then each ``sets`` item (``model.FIELD=VALUE`` or
    ``train.FIELD=VALUE``, a Python literal or a bare string) applied: what runs is what was set."""
    preset = config.scaled(config.get_preset(name), profile)
    for item in sets:
        key, sep, raw = item.partition("=")
        part, _, field = key.strip().partition(".")
        names = {p: [f.name for f in fields(getattr(preset, p))] for p in ("model", "train")}
        if not sep or field not in names.get(part, ()):
            raise ValueError(f"--set {item!r}: use model.FIELD=VALUE or train.FIELD=VALUE with a "
                             f"field of {part if part in names else 'model or train'}: "
                             + "; ".join(f"{p}: {', '.join(n)}" for p, n in names.items()
                                         if part not in names or p == part))
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        now = getattr(getattr(preset, part), field)
        if now is not None and value is not None and not isinstance(value, type(now)) \
                and not (isinstance(now, float) and type(value) is int):
            raise ValueError(f"--set {item!r}: {key.strip()} takes {type(now).__name__} values "
                             f"(now {now!r}), not {value!r}")
        preset = replace(preset, **{part: replace(getattr(preset, part), **{field: value})})
    return preset


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m diffnb.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", help=f"one of {', '.join(config.PRESETS)}")
    ap.add_argument("--profile", choices=sorted(runtime.PROFILES),
                    help="loop sizes (default: $DIFFNB_PROFILE, else cpu once its weights are kept, else quick)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="PART.FIELD=VALUE",
                    help="change the scaled preset, e.g. train.batch_size=64 (repeatable)")
    ap.add_argument("--retrain", action="store_true", help="delete the run's checkpoints first")
    ap.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                    help="stop after that many epochs of this call (resume later)")
    ap.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                    help="start no epoch that would end later than this from now")
    ap.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                    help="torch.compile the loss (MODE e.g. reduce-overhead)")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on CUDA and CPUs with native bf16)")
    return ap


def epoch_line(preset):
    """Prints one line per finished epoch (a log file has no progress bar)."""
    def show(epoch: int, h: dict) -> None:
        print(f"diffnb.training: {preset.name} epoch {epoch} of {preset.train.epochs}: train "
              f"loss {h['train_loss'][-1]:.4f}, valid loss {h['valid_loss'][-1]:.4f}, "
              f"{h['images_per_second'][-1]:.1f} img/s, {h['epoch_seconds'][-1]:.0f} s",
              flush=True)
    return show


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        world = distributed.from_env()
        profile = runtime.PROFILES[args.profile] if args.profile else runtime.profile()
        preset = preset_from(args.preset, profile=profile, sets=args.sets)
        per_process = distributed.check_batch(preset.train.batch_size, world.size)
        dev = runtime.device()
    except (KeyError, ValueError, TypeError) as err:
        ap.error(str(err.args[0]) if isinstance(err, KeyError) else str(err))
    if world.size > 1 and dev.type == "cuda" and dev.index != world.local_rank:
        ap.error(f"DIFFNB_DEVICE={dev} under torchrun: every process would use that one GPU. Set "
                 f"DIFFNB_DEVICE=cuda (each process takes cuda:LOCAL_RANK) or unset it.")
    deadline = None if args.deadline is None else time.monotonic() + args.deadline
    distributed.init(dev)
    try:
        with runtime.using_profile(profile):
            if world.main:
                print(f"diffnb.training: {preset.name} ({preset.short}), profile {profile.name}, "
                      f"{world.size} process(es) on {dev.type}, global batch "
                      f"{preset.train.batch_size} ({per_process} per process)", flush=True)
            t = training.load_or_train(preset, profile=profile, device=dev, retrain=args.retrain,
                                       progress=world.main, amp=args.amp, compile=args.compile,
                                       stop_after=args.stop_after, deadline=deadline,
                                       on_epoch=epoch_line(preset) if world.main else None)
    finally:
        distributed.destroy()
    if world.main:
        h = t.history
        state = "finished" if t.finished else "stopped (rerun to resume)"
        print(f"diffnb.training: {state} at epoch {len(h['train_loss'])} of {preset.train.epochs}, "
              f"resumed from epoch {t.resumed_from}, {t.train_seconds:.1f} s"
              + (f", last train loss {h['train_loss'][-1]:.4f}" if h["train_loss"] else "")
              + f"; checkpoints in {t.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
