"""Scoring trained presets with FID (slides 8-9): results files with their provenance. The
report's tables are rebuilt from those files in :mod:`diffnb.evaluation.tables`; samplers become
FID sources in :mod:`diffnb.evaluation.sources`.

Every score lands in ``results[/<profile>]/fid/<preset>.json`` with the profile, protocol, n, seed,
sampler, steps and device; the tables are read back from there, so no number is typed by hand.
The FID sizes are the run profile's. ``python -m diffnb.evaluation PRESET`` scores one preset.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pandas as pd

from diffnb import config, data, fid, runtime, training
from diffnb.diffusion import sampling
from diffnb.evaluation import classifier, reading, tables
from diffnb.evaluation.sources import SamplerSpec, SampleSource
from diffnb.results import Busy, atomic_write, exclusive, provenance
from diffnb.training import checkpoints


def _protocol_sizes(profile: runtime.Profile) -> dict[str, dict]:
    """The FID sizes of each protocol (keywords of :func:`fid.evaluate`) in a run profile."""
    return {"report": {"n": profile.fid_report_per_class},
            "standard": {"n": profile.fid_standard_n, "n_per_class": profile.fid_standard_per_class,
                         "test_n": profile.fid_test_n}}


def score(trained: training.Trained, *, spec: SamplerSpec = SamplerSpec(), seed: int = 0,
          protocols=fid.PROTOCOLS, tag: str = "", reuse: bool = True, wait: bool = True,
          profile: runtime.Profile | None = None) -> dict:
    """Both protocols for one trained preset, written to ``results/fid/<preset><tag>.json``.

    A result that *this checkout* computed for the same preset, weights, profile, sampler, seed
    and sizes is reused (``reuse``); a committed result from elsewhere (a fresh clone, CI) is
    always recomputed, so every number in ``results/`` is re-derived where it is checked. A
    results file that does not parse is recomputed, with a warning. A score that another
    process of this checkout is computing is waited for and read back (``wait=False``:
    :class:`diffnb.results.Busy` is raised instead). Under 2048 images per set,
    one :class:`fid.SmallSampleWarning` at the caller's line.

    Samples come from a :class:`SampleSource`: every class of both protocols is drawn at once,
    and features of a (sampler, class, seed) stream already in the feature cache
    (``.cache/fid/generated``, git-ignored) are read, not generated again; the numbers are the
    same either way. ``generated_images`` counts the samples drawn, ``reused_images`` the
    samples whose features came from that cache.
    """
    preset = trained.preset
    p = profile or runtime.profile()
    spec = spec.resolved(p)
    sizes = _protocol_sizes(p)
    unknown = set(protocols) - set(sizes)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; use some of {fid.PROTOCOLS}")
    cc = preset.model.class_conditional
    smallest = min(fid.smallest_set(pr, class_conditional=cc, **sizes[pr]) for pr in protocols)
    fid.warn_small_sample(smallest, what=f"scoring {preset.name} ({', '.join(protocols)}; "
                          f"profile {p.name}): smallest set {smallest}", stacklevel=2)
    want = {"preset": preset.name, "run_key": config.run_key(preset), "profile": p.name,
            "seed": seed, "sampler": spec.__dict__, "protocols": list(protocols),
            "sizes": {"report": p.fid_report_per_class, "standard": p.fid_standard_n,
                      "standard_per_class": p.fid_standard_per_class, "test_n": p.fid_test_n}}
    den = trained.raw if spec.weights == "raw" else trained.denoiser
    want["weights_fingerprint"] = checkpoints.fingerprint(den)
    reader = reading.kept_reader()
    want["classifier"] = None if reader is None else classifier.manifest()["sha256"]
    path = tables.result_path(preset.name, tag)
    stamp = runtime.stamps_dir() / f"{p.name}_{path.name}"
    # under the lock: of two queues side by side, one scores, the other reads back its score
    with exclusive(f"{p.name}_{path.name}", wait=wait):
        if reuse and (old := _reusable(path, stamp, want, p)) is not None:
            return old
        return _draw_and_score(trained, den, spec=spec, seed=seed, protocols=protocols,
                               sizes=sizes, want=want, reader=reader, path=path, stamp=stamp,
                               profile=p)


def _reusable(path, stamp, want: dict, p: runtime.Profile) -> dict | None:
    """The stored score at ``path`` where it may be reused (see :func:`score`), else None."""
    if not path.exists() or runtime.rescore() or \
            not (stamp.exists() or runtime.reuse_committed(p)):
        return None
    try:
        old = tables.read_result(path)
        stamped = tables.read_result(stamp) if stamp.exists() else None
    except ValueError as err:
        warnings.warn(f"{err}; scoring {want['preset']} again", stacklevel=3)
        return None
    if (stamped == want or runtime.reuse_committed(p)) and \
            all(old.get(k) == v for k, v in want.items()):
        return old
    return None


def _draw_and_score(trained, den, *, spec, seed, protocols, sizes, want, reader, path, stamp,
                    profile: runtime.Profile) -> dict:
    p, preset, cc = profile, trained.preset, trained.preset.model.class_conditional
    keep = runtime.output_dir("results", p) / "partial" if p.name in runtime.KEPT_PROFILES \
        else None    # a cut scoring goes on from its kept samples (evaluation.partial)
    gen = SampleSource(den, spec, fingerprint=want["weights_fingerprint"], reader=reader,
                       keep=keep)
    # every draw of every protocol at once (the standard protocol's extend the report's)
    gen.plan([d for pr in protocols for d in fid.draws(pr, seed=seed, class_conditional=cc,
                                                        **sizes[pr])])
    t0 = time.perf_counter()
    out = {**provenance(**want), "title": preset.title, "params": preset.params_text,
           "sampler_label": spec.label, "epochs": preset.train.epochs,
           "train_seconds": float(sum(trained.history["epoch_seconds"])),
           "parameters": sum(x.numel() for x in trained.raw.net.parameters())}
    for protocol in protocols:
        out[protocol] = fid.evaluate(gen, protocol=protocol, seed=seed, class_conditional=cc,
                                     warn=False, **sizes[protocol])
        if reader is not None:
            out[protocol].update(reading.read_classes(gen, protocol, seed=seed,
                                                      class_conditional=cc, sizes=sizes[protocol]))
    out["generated_images"] = gen.generated   # drawn by the sampler for this call
    out["reused_images"] = gen.reused         # features read from the cache instead
    out["resumed_images"] = gen.resumed       # samples read back from a cut scoring's files,
                                              # by the machine that drew them
    out["eval_seconds"] = time.perf_counter() - t0
    atomic_write(path, json.dumps(out, indent=2, sort_keys=True, default=float) + "\n")
    atomic_write(stamp, json.dumps(want, sort_keys=True, default=float))
    if gen.store is not None:
        gen.store.forget(gen.kept_streams)
    return out


def report_protocols(profile: runtime.Profile) -> tuple[str, ...]:
    """The protocols every report model is scored with: both, or the report's alone where the
    profile keeps the standard protocol for the best model (``standard_for="best"``)."""
    return fid.PROTOCOLS if profile.standard_for == "all" else ("report",)


def report_models(names, *, seed: int = 0, profile: runtime.Profile | None = None,
                  trained=None, standard: bool = True) -> dict[str, dict]:
    """Slide 8's scores of ``names``: the report protocol for each; the standard protocol for
    each, or (``standard_for="best"``) for the one of lowest report-protocol Average FID,
    whose report-protocol samples start its standard draws (drawn once). ``trained(name)``
    gives a trained preset (default: ``training.load_or_train``); ``standard=False``: not the
    best's standard protocol (the run queue scores one model at a time, then the best)."""
    p = profile or runtime.profile()
    get = trained or (lambda name: training.load_or_train(name, profile=p))
    protocols = report_protocols(p)
    tag = "" if protocols == fid.PROTOCOLS else "__report"
    scores = {n: score(get(n), seed=seed, protocols=protocols, tag=tag, profile=p) for n in names}
    if standard and protocols != fid.PROTOCOLS:
        best = min(scores, key=lambda n: scores[n]["report"]["average"])
        std = score(get(best), seed=seed, protocols=("standard",), tag="__standard", profile=p)
        scores[best] = {**scores[best], "standard": std["standard"]}
    return scores


def best_change(trained: training.Trained, change: Change, *, seed: int = 0,
                profile: runtime.Profile | None = None) -> dict:
    """Notebook 06's best (the ablation's last row) with both protocols at the profile's full
    sizes: per class with the report protocol, and the standard protocol's FID. Where the
    ablation scored at the same size, its samples' features are read back, not drawn again."""
    return score(trained, spec=change.spec, seed=seed, tag="__best",
                 profile=profile or runtime.profile())


def study_profile(profile: runtime.Profile) -> runtime.Profile:
    """The profile a study scores with: the standard protocol at ``fid_study_n`` samples (a
    tenth per class) where the profile sets one."""
    n = profile.fid_study_n
    if n is None or n == profile.fid_standard_n:
        return profile
    return replace(profile, fid_standard_n=n, fid_standard_per_class=max(1, n // 10))


def floor_curve(ns: list[int], *, seed: int = 0) -> pd.DataFrame:
    """Real-vs-real FID (:func:`fid.real_vs_real`, the protocols' floor) of n vs n other training
    images, for each n; one feature pass: each pair is a slice of one seeded draw of 2 max(ns)."""
    fid.real_features("train", n=2 * max(ns), seed=seed)
    return pd.DataFrame([{"n": n, "real_vs_real_fid": fid.real_vs_real(n, seed=seed)}
                         for n in ns])


@dataclass(frozen=True)
class Change:
    """One row of an ablation: a label, the trained preset it uses and how it is sampled."""

    label: str
    preset: str
    spec: SamplerSpec = SamplerSpec()


@contextmanager
def one_warning(what: str, profile: runtime.Profile | None, *, at_caller: bool = True):
    """Scoring many times warns once, then is quiet. The warning points at the function that
    holds the ``with`` (``at_caller=False``: a notebook cell) or at its caller (a study)."""
    p = profile or runtime.profile()
    fid.warn_small_sample(p.fid_standard_per_class * data.NUM_CLASSES, what=f"{what} (profile "
                          f"{p.name}, standard protocol n={p.fid_standard_n})",
                          stacklevel=4 if at_caller else 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fid.SmallSampleWarning)
        yield


def ablation(changes: list[Change], trained: dict[str, training.Trained], *, seed: int = 0,
             name: str = "ablation", profile: runtime.Profile | None = None) -> pd.DataFrame:
    """Score each change with the standard protocol (at the profile's ``fid_study_n``); one row
    per change, with provenance."""
    rows, p = [], study_profile(profile or runtime.profile())
    with one_warning(f"{name} of {len(changes)} changes", p):
        scores = score_rows([dict(trained=trained[c.preset], spec=c.spec, seed=seed,
                                  protocols=("standard",), tag=f"__{name}{i}", profile=p)
                             for i, c in enumerate(changes)])
    for change, s in zip(changes, scores):
        std = standard_row(s)
        rows.append({"change": change.label, "preset": change.preset,
                     "sampler": s["sampler_label"], **{k: std[k] for k in ("FID", "floor",
                                                                            "KID x1e3")},
                     "parameters": s["parameters"], "epochs": s["epochs"],
                     "train min": s["train_seconds"] / 60, "n": std["n"]})
    return pd.DataFrame(rows)


def score_rows(calls: list[dict]) -> list[dict]:
    """``score(**call)`` for each call, in order. Two run queues side by side on one study
    share its rows: a row the other process is scoring is skipped, then waited for and read
    back once this one has scored the rest."""
    out, busy = {}, []
    for i, call in enumerate(calls):
        try:
            out[i] = score(**call, wait=False)
        except Busy:
            busy.append(i)
    for i in busy:
        out[i] = score(**calls[i])
    return [out[i] for i in range(len(calls))]


def standard_row(s: dict) -> dict:
    """A score's standard protocol in one row: FID, its real-vs-real floor, KID, n and (where
    the classifier read the samples) the mean share drawn in the class asked for."""
    std = s["standard"]
    row = {"FID": std["pooled"], "floor": std["floor_pooled"], "KID x1e3": 1e3 * std["kid_mean"],
           "n": std["n"]}
    if std.get("own_class_share_mean") is not None:
        row["own class"] = std["own_class_share_mean"]
    return row


def nfe_study(trained: training.Trained, steps: dict[str, list[int]], *, seed: int = 0,
              guidance: float = 1.0, profile: runtime.Profile | None = None) -> pd.DataFrame:
    """Standard-protocol FID (at the profile's ``fid_study_n``) against network evaluations,
    per solver."""
    profile = study_profile(profile or runtime.profile())
    runs = [(solver, k) for solver, counts in steps.items() for k in counts]
    with one_warning(f"FID vs NFE of {trained.preset.name}", profile):
        scores = score_rows([dict(trained=trained, seed=seed, protocols=("standard",),
                                  spec=SamplerSpec(solver=solver, steps=k, guidance=guidance),
                                  tag=f"__nfe_{solver}{k}_w{guidance:g}", profile=profile)
                             for solver, k in runs])
    return pd.DataFrame([{"solver": solver, "steps": k, "NFE": sampling.nfe(k, solver),
                          "FID": s["standard"]["pooled"], "floor": s["standard"]["floor_pooled"]}
                         for (solver, k), s in zip(runs, scores)])


def main(argv=None) -> None:
    """``python -m diffnb.evaluation PRESET [--protocol P] [--seed S]``: train or load the preset
    in the run profile, score it (:func:`score`) and print the results JSON."""
    parser = argparse.ArgumentParser(prog="python -m diffnb.evaluation",
                                     description="FID of a trained preset (DIFFNB_PROFILE sizes).")
    parser.add_argument("preset", help=f"one of {', '.join(config.PRESETS)}")
    parser.add_argument("--protocol", choices=fid.PROTOCOLS, action="append",
                        help="repeatable; default: both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    protocols = tuple(dict.fromkeys(args.protocol or fid.PROTOCOLS))
    try:
        trained = training.load_or_train(args.preset)
    except KeyError as err:  # unknown preset: the message lists the known ones
        parser.error(str(err))
    # a single protocol goes to its own file: results/fid/<preset>.json keeps both
    tag = "" if set(protocols) == set(fid.PROTOCOLS) else "__" + "_".join(protocols)
    result = score(trained, seed=args.seed, protocols=protocols, tag=tag)
    print(json.dumps(result, indent=2, sort_keys=True, default=float))
