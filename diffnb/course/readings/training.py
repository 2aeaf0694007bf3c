"""Readings after training figures: loss curves (slide 4) and the zero initialisation (slide 6)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from diffnb.course.readings.text import Reading, _join, _sentences

# "Well below": a final validation loss under this fraction of the final training loss.
VALID_BELOW = 0.8


def loss_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], *,
                explain: bool = True) -> Reading:
    """After a loss-curve figure: final validation losses, lowest first, and their last trend.

    ``histories``: label -> a trainer history with ``train_loss`` and ``valid_loss`` per epoch.
    ``explain``: say how to read the two curves (the first loss figure of the course, notebook
    02); later figures point back to it.
    """
    if not histories:
        raise ValueError("no training histories to read")
    final = {label: float(h["valid_loss"][-1]) for label, h in histories.items()}
    order = sorted(final, key=final.get)
    listing = ", ".join(f"{label} {final[label]:.3f}" for label in order)
    if len(order) == 1:
        first = f"Final validation loss: {listing}."
    else:
        first = f"Final validation loss, lowest first: {listing}."
    fell = [k for k, h in histories.items()
            if len(h["valid_loss"]) > 1 and h["valid_loss"][-1] < h["valid_loss"][-2]]
    rose = [k for k, h in histories.items()
            if len(h["valid_loss"]) > 1 and h["valid_loss"][-1] >= h["valid_loss"][-2]]
    trend = ""
    every = "every model" if len(histories) > 1 else _join(list(histories))
    if fell and rose:
        trend = (f"In the last epoch the validation loss fell for {_join(fell)} and did not fall "
                 f"for {_join(rose)}.")
    elif fell:
        trend = f"In the last epoch the validation loss fell for {every}."
    elif rose:
        who = "any model" if len(histories) > 1 else _join(list(histories))
        trend = f"In the last epoch the validation loss did not fall for {who}."
    below = [k for k, h in histories.items()
             if float(h["valid_loss"][-1]) < VALID_BELOW * float(h["train_loss"][-1])]
    why = ""
    if below and not explain:
        why = (f"The validation loss ends well below the training loss for {_join(below)} "
               "(notebook 02 says why).")
    elif below:
        why = (f"The validation loss ends well below the training loss for {_join(below)}. The "
               "training loss is the mean over the epoch's steps while the weights still change, "
               "its early, worse steps included. Validation is measured once, after the epoch.")
    how = ("A dashed line far above its solid one means the model fits its training images "
           "better than new ones. A line still falling at the right edge means more epochs would "
           "help.") if explain else ""
    return _sentences(first, trend, why, how)


def zero_init(losses: Mapping[bool, Sequence[float]]) -> Reading:
    """After the zero-initialisation figure: first-step and first-epoch losses, with and without.

    ``losses``: ``{True: per-step losses with zero init, False: without}``.
    """
    on, off = list(losses[True]), list(losses[False])
    if not on or not off:
        raise ValueError("need the losses of both runs")
    mean_on, mean_off = sum(on) / len(on), sum(off) / len(off)
    first = (f"First training step: loss {on[0]:.3f} with zero initialisation, {off[0]:.3f} "
             f"without. Mean over the first {len(on)} steps: {mean_on:.3f} with, {mean_off:.3f} "
             "without.")
    if mean_on < mean_off:
        verdict = (f"Over these steps the zero-initialised network's loss is "
                   f"{mean_off / mean_on:.1f} times lower on average.")
    elif mean_on > mean_off:
        verdict = (f"Over these steps the zero-initialised network's loss is higher on average "
                   f"(by a factor {mean_on / mean_off:.1f}).")
    else:
        verdict = "Over these steps both average the same loss."
    return _sentences(first, verdict)


def explored(name: str, *, profile: str, run_profile: str) -> Reading:
    """Which model notebook 04's picker samples: ``name``, trained in ``profile``, in a run of
    ``run_profile`` (the pick of the longest kept training, else this run's)."""
    if profile != run_profile:
        return _sentences(f"The picker samples {name}, the {profile} run's pick by the same rule, "
                          f"from its kept weights: this {run_profile} run trained nothing for it.")
    if profile == "full":
        return _sentences(f"The picker samples {name}, this run's pick.")
    return _sentences(f"The picker samples {name}, this {profile} run's pick: no weights of "
                      "these models trained longer are kept, so it samples the model of the grids "
                      "above.")


def _epochs(k: int) -> str:
    return f"{k} epoch" if k == 1 else f"{k} epochs"


def trained_runs(histories: Mapping[str, Mapping[str, Sequence[float]]], *,
                 epoch_images: int | Mapping[str, int]) -> Reading:
    """After ``load_or_train``: how long each model trained and its final training and validation
    losses. ``histories``: label -> a trainer history; ``epoch_images``: images per epoch, one
    number for all or one per label."""
    if not histories:
        raise ValueError("no training histories to read")
    runs = {label: (len(h["train_loss"]),
                    int(epoch_images[label] if isinstance(epoch_images, Mapping) else epoch_images))
            for label, h in histories.items()}
    labels = list(histories)
    if len(set(runs.values())) == 1:
        epochs, images = runs[labels[0]]
        each = " each" if len(labels) > 1 else ""
        first = f"{_join(labels)} trained for {_epochs(epochs)} of {images:,} images{each}."
    else:
        first = "Trained: " + ", ".join(f"{label} {_epochs(e)} of {n:,} images"
                                        for label, (e, n) in runs.items()) + "."
    losses = ", ".join(f"{label} {float(h['train_loss'][-1]):.3f} / {float(h['valid_loss'][-1]):.3f}"
                       for label, h in histories.items())
    return _sentences(first, f"Final training / validation loss: {losses}.")
