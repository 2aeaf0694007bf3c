"""A scoring cut at the deadline keeps its samples and goes on from them (diffnb.evaluation.partial).

The deadline is a fake clock that ticks once per check, so the cuts fall after a known number
of sampler batches; no timing is asserted. Inception is replaced by 4x4 average pooling and the
samples come from a tiny random class-conditional model, as in test_feature_cache.py.
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffnb import config, evaluation, runtime
from diffnb.evaluation import partial, sources
from diffnb.run import pipeline, records, stages

pytestmark = pytest.mark.filterwarnings("ignore::diffnb.fid.SmallSampleWarning")

SPEC = evaluation.SamplerSpec(steps=2)


def ticking_clock(monkeypatch):
    """time.monotonic for partial: 0, 1, 2, ... one tick per deadline check."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(partial, "time", SimpleNamespace(monotonic=lambda: next(ticks)))


def test_a_cut_stream_goes_on_from_its_kept_samples(scoring_outputs, monkeypatch,
                                                    random_class_model):
    whole = sources.SampleSource(random_class_model, SPEC, cache=False).features(3, 40, 7)
    keep = scoring_outputs / "partial"
    ticking_clock(monkeypatch)
    cut = sources.SampleSource(random_class_model, SPEC, cache=False, keep=keep, batch_size=16)
    with partial.deadline(2), pytest.raises(partial.ScoringCut, match="at sample 32") as stop:
        cut.features(3, 40, 7)                   # two batches of 16 drawn, the third cut
    assert cut.generated == 32 and stop.value.progressed
    [kept] = keep.glob("*/class3_seed7.npz")
    with np.load(kept) as saved:
        assert saved["samples"].dtype == np.float16 and saved["samples"].shape[0] == 32
        [[rows, by]] = json.loads(str(saved["drawn_on"]))
    assert rows == 32 and by.startswith(runtime.cpu_model())

    again = sources.SampleSource(random_class_model, SPEC, cache=False, keep=keep, batch_size=16)
    resumed = again.features(3, 40, 7)
    assert again.generated == 8                            # only samples 32..39 drawn
    [(machine, count)] = again.resumed.items()             # read back, with who drew them
    assert count == 32 and machine.startswith(runtime.cpu_model())
    assert np.array_equal(resumed[32:], whole[32:])        # drawn here: the same bits
    assert np.abs(resumed[:32] - whole[:32]).max() < 2e-3  # read back: rounded to fp16


def test_a_kept_run_that_starts_later_gets_its_first_rows_drawn_again(
        scoring_outputs, monkeypatch, random_class_model):
    """The standard protocol extends the report protocol's 64 samples per class, whose features
    are in this machine's cache: its kept run starts at sample 64. On a machine without them,
    the first rows are drawn again and the kept ones read back."""
    whole = sources.SampleSource(random_class_model, SPEC, cache=False).features(3, 32, 7)
    sources.SampleSource(random_class_model, SPEC).features(3, 16, 7)    # cached: rows 0..15
    keep = scoring_outputs / "partial"
    ticking_clock(monkeypatch)
    cut = sources.SampleSource(random_class_model, SPEC, keep=keep, batch_size=8)
    with partial.deadline(1), pytest.raises(partial.ScoringCut, match="at sample 24"):
        cut.features(3, 32, 7)
    assert (cut.generated, cut.reused) == (8, 16)          # rows 16..23 drawn and kept
    monkeypatch.setenv("DIFFNB_CACHE", str(scoring_outputs / "elsewhere"))
    short = sources.SampleSource(random_class_model, SPEC, keep=keep, batch_size=8)
    short.features(3, 8, 7)          # a shorter scoring here: drawn, the kept run left alone
    with np.load(short.store.path(3, 7)) as saved:
        assert int(saved["first"]) == 16 and saved["samples"].shape[0] == 8
    again = sources.SampleSource(random_class_model, SPEC, keep=keep, batch_size=8)
    resumed = again.features(3, 32, 7)      # rows 0..7 cached by the short scoring
    assert (again.generated, sum(again.resumed.values()), again.reused) == (16, 8, 8)
    assert np.array_equal(resumed[:16], whole[:16]) and np.array_equal(resumed[24:], whole[24:])
    assert np.abs(resumed[16:24] - whole[16:24]).max() < 2e-3
    with np.load(again.store.path(3, 7)) as saved:
        assert int(saved["first"]) == 8 and saved["samples"].shape[0] == 24
    cached = sources.SampleSource(random_class_model, SPEC, batch_size=8)
    cached.features(3, 32, 7)    # features with rows drawn elsewhere are not this machine's cache
    assert (cached.generated, cached.reused) == (24, 8)    # only the short scoring's rows 0..7


def test_kept_samples_of_another_sampler_or_a_torn_file_are_not_used(scoring_outputs,
                                                                     random_class_model):
    keep = scoring_outputs / "partial"
    src = sources.SampleSource(random_class_model, SPEC, cache=False, keep=keep)
    src.features(2, 8, 5)
    other = sources.SampleSource(random_class_model, evaluation.SamplerSpec(steps=3),
                                 cache=False, keep=keep)
    other.features(2, 8, 5)
    assert (other.generated, other.resumed) == (8, {})      # another sampler: its own files
    assert len(list(keep.glob("*/class2_seed5.npz"))) == 2
    path = src.store.path(2, 5)
    path.write_bytes(path.read_bytes()[:100])              # a write cut short
    torn = sources.SampleSource(random_class_model, SPEC, cache=False, keep=keep)
    torn.features(2, 8, 5)
    assert (torn.generated, torn.resumed) == (8, {})


def test_a_kept_profiles_scoring_resumes_after_the_deadline_and_clears_its_files(
        scoring_outputs, monkeypatch, random_class_model):
    tiny = runtime.PROFILES["tiny"]
    monkeypatch.setattr(runtime, "KEPT_PROFILES", ("tiny",))
    preset = config.scaled(config.get_preset("class_2"), tiny)
    trained = SimpleNamespace(preset=preset, raw=random_class_model,
                              denoiser=random_class_model, history={"epoch_seconds": [1.0]})
    uncut = evaluation.score(trained, spec=SPEC, reuse=False, profile=tiny, tag="__uncut")
    assert uncut["resumed_images"] == {}
    partial_dir = runtime.output_dir("results", tiny) / "partial"
    assert not partial_dir.exists()                        # written, then cleared

    monkeypatch.setenv("DIFFNB_CACHE", str(scoring_outputs / "cold"))  # no features of the first
    ticking_clock(monkeypatch)
    with partial.deadline(3), pytest.raises(partial.ScoringCut):
        evaluation.score(trained, spec=SPEC, reuse=False, profile=tiny)
    kept = sorted(p.name for p in partial_dir.glob("*/*.npz"))
    assert kept == ["class0_seed0.npz", "class1_seed1.npz", "class2_seed2.npz"]
    monkeypatch.setenv("DIFFNB_CACHE", str(scoring_outputs / "colder"))  # another machine, say
    done = evaluation.score(trained, spec=SPEC, reuse=False, profile=tiny)
    resumed = sum(done["resumed_images"].values())
    assert resumed > 0 and done["generated_images"] > 0
    assert resumed + done["generated_images"] == uncut["generated_images"]
    assert not partial_dir.exists()
    for protocol in ("report", "standard"):
        assert done[protocol]["average" if protocol == "report" else "pooled"] == pytest.approx(
            uncut[protocol]["average" if protocol == "report" else "pooled"], rel=1e-3)


def test_a_written_score_removes_only_the_kept_runs_it_used_up(tmp_path):
    store = partial.Store(tmp_path / "partial", {"weights_fingerprint": "x"}, device="cpu")
    rows = torch.zeros(40, 1, 4, 4)
    store.save(1, 1, first=0, rows=rows[:16], drawn_on=[[16, "cpu"]])
    store.save(2, 2, first=0, rows=rows, drawn_on=[[40, "cpu"]])   # a longer scoring's
    store.forget({(1, 1): 16, (2, 2): 24})
    assert not store.path(1, 1).exists() and store.path(2, 2).exists()
    store.forget({(2, 2): 40})
    assert not (tmp_path / "partial").exists()


def test_a_cut_before_any_batch_is_no_progress_and_resumed_calls_do_not_calibrate(
        monkeypatch, random_class_model, tmp_path):
    ticking_clock(monkeypatch)
    src = sources.SampleSource(random_class_model, SPEC, cache=False, keep=tmp_path)
    with partial.deadline(0) as tally, pytest.raises(partial.ScoringCut) as stop:
        src.features(0, 8, 0)
    assert not stop.value.progressed and tally["drawn"] == 0
    state = {"stages": {
        "fid:a": {"device": "cpu", "kind": "fid", "prior_seconds": 10.0, "seconds": 30.0},
        "fid:b": {"device": "cpu", "kind": "fid", "prior_seconds": 10.0, "seconds": 1.0,
                  "resumed_samples": 600}}}
    assert stages.calibration(state, "cpu") == 3.0


def test_the_queue_stops_a_cut_scoring_and_runs_it_again_next_time(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    cut = {"fid:base_1"}

    def run_stage(stage, ctx):
        if stage.name in cut:
            partial.check_deadline("scoring class 0, seed 0 at sample 8 of 64")
        return {}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "missing", lambda *a, **k: None)
    tiny = runtime.PROFILES["tiny"]
    r = pipeline.run(tiny, only=["fid:base_1", "fid:base_2"], device="cpu", deadline_s=1e-9)
    said = capsys.readouterr().out
    assert "fid:base_1 stopped at the deadline (scoring class 0" in said
    assert "too short for even one sampler batch: nothing was lost" in said
    assert r["pending"] == ["fid:base_1", "fid:base_2"] and r["failed"] == []
    cut.clear()
    r = pipeline.run(tiny, only=["fid:base_1", "fid:base_2"], device="cpu")
    assert r["pending"] == [] and "fid:base_1" in r["state"]["stages"]
    assert json.loads(records.state_path(tiny).read_text())["stages"].keys() >= {"fid:base_1"}


def test_a_scoring_that_keeps_its_samples_starts_though_it_will_not_fit(tmp_path, monkeypatch,
                                                                        capsys):
    """In a kept profile on a CPU a scoring cut at the deadline loses at most a sampler batch: the
    queue starts it with little time left; a stage that keeps nothing (a floor curve) still waits
    for the next command."""
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(runtime, "KEPT_PROFILES", ("tiny",))
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, ctx: ran.append(stage.name) or {})
    monkeypatch.setattr(pipeline, "missing", lambda *a, **k: None)
    monkeypatch.setattr(stages, "prior_seconds", lambda stage, *a, **k:
                        1.0 if stage.name == "study:class0_bug" else 1e6)
    tiny = runtime.PROFILES["tiny"]
    only = ["study:class0_bug", "study:best_per_class", "study:floor_curve"]
    r = pipeline.run(tiny, only=only, device="cpu", deadline_s=600)
    said = capsys.readouterr().out
    assert ran == ["study:class0_bug", "study:best_per_class"]
    assert "study:best_per_class (~" in said and "keeps its samples" in said
    assert "stop before study:floor_curve" in said and r["pending"] == ["study:floor_curve"]
    assert not stages.keeps_samples(stages.Stage("fid:base_1", "fid"), tiny, device="cuda")
    monkeypatch.setattr(runtime, "KEPT_PROFILES", ())
    assert not stages.keeps_samples(stages.Stage("fid:base_1", "fid"), tiny, device="cpu")
