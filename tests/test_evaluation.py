"""diffnb.evaluation: FID generators reuse samples, tables are built from results files."""
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffnb import config, data, evaluation, fid, runtime
from diffnb.fid import network

pytestmark = pytest.mark.filterwarnings("ignore::diffnb.fid.SmallSampleWarning")


def test_generator_reuses_samples_as_prefixes(random_class_model):
    gen = evaluation.SampleSource(random_class_model, evaluation.SamplerSpec(steps=3))
    labels = torch.full((3,), 4)
    a = gen(labels, 3, seed=7)
    b = gen(torch.full((5,), 4), 5, seed=7)
    assert gen.generated == 5                      # 3, then only the 2 missing
    torch.testing.assert_close(b[:3], a)
    c = gen(torch.full((2,), 5), 2, seed=7)
    assert gen.generated == 7 and not torch.allclose(c, b[:2])
    with pytest.raises(ValueError, match="one class at a time"):
        gen(torch.tensor([1, 2]), 2, seed=0)


def _fake_score(title, offset):
    per_class = {name: 50.0 + offset + k for k, name in enumerate(data.CLASS_NAMES)}
    floor = {name: 40.0 + k for k, name in enumerate(data.CLASS_NAMES)}
    block = {"per_class": per_class, "floor_per_class": floor, "n": 8, "n_per_class": None,
             "average": sum(per_class.values()) / 10, "floor_average": sum(floor.values()) / 10}
    return {"title": title, "params": "p", "report": block,
            "standard": {**block, "pooled": 60.0 + offset, "floor_pooled": 20.0, "kid_mean": 0.01}}


def test_slide_tables_from_scores():
    scores = {"class_1": _fake_score("Class Conditional 1", 0), "class_2": _fake_score("Class Conditional 2", 10)}
    t8 = evaluation.slide8_table(scores)
    assert t8["report FID (slide 8)"].tolist() == [config.get_preset(n).report_fid for n in scores]
    assert t8["ours, standard (pooled)"].tolist() == [60.0, 70.0]
    t9 = evaluation.slide9_table(scores)
    assert list(t9.columns) == list(data.CLASS_NAMES) and len(t9) == 3
    assert t9.index[-1].startswith("real vs real")
    excess = evaluation.excess_over_floor(t9)
    assert (excess.loc["Class Conditional 2"] == 20.0).all()
    assert evaluation.rank_classes(t9.iloc[:-1]).index[0] == "T-shirt/top"


def test_report_slide9_numbers_are_the_reports():
    t = evaluation.report_slide9_table()
    for name, values in config.REPORT_PER_CLASS_FID.items():
        p = config.get_preset(name)
        assert t.loc[p.title].tolist() == list(values) and list(t.columns) == list(data.CLASS_NAMES)
        # slide 8's average is slide 9's row mean, up to the rounding of the printed numbers:
        # half a unit of each value's last decimal (averaged) plus half of the average's
        half = lambda v: 0.5 * 10.0 ** -len(repr(float(v)).split(".")[1])
        tol = sum(half(v) for v in values) / len(values) + half(p.report_fid)
        assert abs(t.loc[p.title].mean() - p.report_fid) <= tol + 1e-9, name


def test_score_reuses_only_results_this_checkout_computed(tmp_path, monkeypatch, random_class_model):
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_evaluate(gen, *, protocol, seed, class_conditional, **sizes):
        calls.append(protocol)
        return {"protocol": protocol, "pooled": 1.0}
    monkeypatch.setattr(fid, "evaluate", fake_evaluate)
    preset = config.scaled(config.get_preset("class_1"))
    trained = SimpleNamespace(preset=preset, raw=random_class_model, denoiser=random_class_model,
                              history={"epoch_seconds": [1.0]})
    evaluation.score(trained, protocols=("standard",))
    evaluation.score(trained, protocols=("standard",))
    assert calls == ["standard"]                       # reused on this machine
    for stamp in runtime.stamps_dir().glob("*"):
        stamp.unlink()                                 # as in a fresh clone: results/ only
    evaluation.score(trained, protocols=("standard",))
    assert calls == ["standard", "standard"]
    monkeypatch.setenv(runtime.RESCORE_ENV, "1")       # asked to score again: not reused
    evaluation.score(trained, protocols=("standard",))
    assert calls == ["standard"] * 3


def test_a_kept_profile_reuses_its_committed_scores_unless_asked(tmp_path, monkeypatch,
                                                                random_class_model):
    """The cpu profile's scores are its kept weights' scores: a fresh clone reads them back
    (the key, with the weights' fingerprint, matches); DIFFNB_RESCORE=1 computes them again."""
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(fid, "evaluate", lambda gen, *, protocol, **k: calls.append(protocol)
                        or {"protocol": protocol, "pooled": 1.0})
    cpu = runtime.PROFILES["cpu"]
    trained = SimpleNamespace(preset=config.scaled(config.get_preset("class_1"), cpu),
                              raw=random_class_model, denoiser=random_class_model,
                              history={"epoch_seconds": [1.0]})
    spec_sizes = {"standard": {"n": 20, "n_per_class": 2, "test_n": 40}}
    monkeypatch.setattr(evaluation.scoring, "_protocol_sizes", lambda p: spec_sizes)
    evaluation.score(trained, profile=cpu, protocols=("standard",))
    for stamp in runtime.stamps_dir().glob("*"):
        stamp.unlink()                                 # a fresh clone: results/ only
    evaluation.score(trained, profile=cpu, protocols=("standard",))
    assert calls == ["standard"]                       # read back
    monkeypatch.setenv(runtime.RESCORE_ENV, "1")
    evaluation.score(trained, profile=cpu, protocols=("standard",))
    assert calls == ["standard"] * 2
    monkeypatch.setenv(runtime.RESCORE_ENV, "yes")
    with pytest.raises(ValueError, match="DIFFNB_RESCORE='yes': use 1"):
        evaluation.score(trained, profile=cpu, protocols=("standard",))


def test_study_memo_is_reused_only_with_this_checkouts_stamp(tmp_path, monkeypatch):
    from diffnb.evaluation import studies
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    profile, calls = runtime.PROFILES["tiny"], []

    def compute():
        calls.append(1)
        return {"value": len(calls)}
    key = {"n": 3, "seed": 0}
    assert studies._memo("s_test", key, compute, profile) == {"value": 1}
    assert studies._memo("s_test", key, compute, profile) == {"value": 1}   # reused here
    assert studies._memo("s_test", {**key, "n": 4}, compute, profile) == {"value": 2}  # new key
    for stamp in runtime.stamps_dir().glob("tiny_memo_*"):
        stamp.unlink()                                  # a fresh clone: results/ only
    assert studies._memo("s_test", {**key, "n": 4}, compute, profile) == {"value": 3}
    path = runtime.output_dir("results", profile) / "memo" / "s_test.json"
    path.write_text(path.read_text()[:20])              # cut short by an interrupted run
    assert studies._memo("s_test", {**key, "n": 4}, compute, profile) == {"value": 4}
    assert json.loads(path.read_text())["value"] == {"value": 4}


def test_zero_init_study_cut_after_one_arm_goes_on_with_the_other(tmp_path, monkeypatch):
    from diffnb.evaluation import studies
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    profile, arms = runtime.PROFILES["tiny"], []

    def first_losses(preset, *, steps, device):
        arms.append(preset.model.zero_init)
        if len(arms) == 2:
            raise KeyboardInterrupt("cut by the deadline")
        return [float(preset.model.zero_init)] * steps
    monkeypatch.setattr(studies, "first_losses", first_losses)
    with pytest.raises(KeyboardInterrupt):
        studies.zero_init_losses(profile=profile)
    kept = runtime.output_dir("results", profile) / "partial" / "s06_zero_init_first_epoch"
    assert [p.name for p in kept.iterdir()] == ["zero_init=True.json"]
    arms.append("resumed")                               # the next call: only the other arm
    losses = studies.zero_init_losses(profile=profile)
    assert arms == [True, False, "resumed", False]
    assert set(losses[True]) == {1.0} and set(losses[False]) == {0.0}
    assert not kept.exists()                              # used up once the study is stored
    assert studies.zero_init_losses(profile=profile) == losses and len(arms) == 4


def test_the_floor_curve_uses_the_ns_it_is_given(tmp_path, monkeypatch):
    import pandas as pd

    from diffnb.evaluation import studies
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    asked = []

    def fake(ns, *, seed):
        asked.append(list(ns))
        return pd.DataFrame({"n": ns, "real_vs_real_fid": [100.0 / n for n in ns]})
    monkeypatch.setattr(evaluation.scoring, "floor_curve", fake)
    profile = runtime.PROFILES["tiny"]
    assert list(studies.floor_curve(profile=profile)["n"]) == list(profile.floor_ns)
    assert list(studies.floor_curve(ns=[64, 256], profile=profile)["n"]) == [64, 256]
    studies.floor_curve(ns=[64, 256], profile=profile)                  # memoised
    assert asked == [list(profile.floor_ns), [64, 256]]


@pytest.fixture
def scoring(tmp_path, monkeypatch, random_class_model):
    """A tiny random class-conditional 'trained preset'; results and caches in tmp_path."""
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    preset = config.scaled(config.get_preset("class_1"))
    return SimpleNamespace(preset=preset, raw=random_class_model, denoiser=random_class_model,
                           history={"epoch_seconds": [1.0]})


@pytest.fixture
def fake_evaluate(monkeypatch):
    calls = []

    def evaluate(gen, *, protocol, seed, class_conditional, warn, **sizes):
        calls.append((protocol, sizes, warn))
        return {"protocol": protocol, "pooled": 1.0}

    monkeypatch.setattr(fid, "evaluate", evaluate)
    return calls


def test_score_passes_the_profiles_sizes(scoring, fake_evaluate):
    evaluation.score(scoring)
    p = runtime.profile()
    assert fake_evaluate == [
        ("report", {"n": p.fid_report_per_class}, False),
        ("standard", {"n": p.fid_standard_n, "n_per_class": p.fid_standard_per_class,
                      "test_n": p.fid_test_n}, False)]


def test_a_lock_held_elsewhere_is_busy_without_waiting_and_free_once_let_go(tmp_path, monkeypatch):
    from diffnb.results import Busy, exclusive
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    with exclusive("row"):                   # another open file: as another process sees it
        with pytest.raises(Busy, match="row is being computed by another process"):
            with exclusive("row", wait=False):
                pass
        with exclusive("other row", wait=False):
            pass
    with exclusive("row", wait=False):
        pass


def test_two_queues_share_a_studys_rows(scoring, fake_evaluate, monkeypatch):
    import threading

    from diffnb.evaluation import scoring as scoring_module
    real, drawn, row1_stored = scoring_module._draw_and_score, [], threading.Event()

    def draw(trained, den, **kw):
        drawn.append(kw["path"].name)
        if kw["path"].name.endswith("__t0.json"):      # the other queue's row, slower
            assert row1_stored.wait(60)
        out = real(trained, den, **kw)
        if kw["path"].name.endswith("__t1.json"):
            row1_stored.set()
        return out
    monkeypatch.setattr(scoring_module, "_draw_and_score", draw)
    calls = [dict(trained=scoring, protocols=("report",), tag=f"__t{i}",
                  profile=runtime.profile()) for i in range(2)]
    other = threading.Thread(target=evaluation.score, kwargs=calls[0])
    other.start()
    while not drawn:                                   # the other queue holds row 0's lock
        other.join(0.01)
    rows = scoring_module.score_rows(calls)
    other.join()
    name = scoring.preset.name
    assert drawn == [f"{name}__t0.json", f"{name}__t1.json"]   # each row drawn once
    assert rows[0] == json.loads((runtime.output_dir("results") / "fid" /
                                  f"{name}__t0.json").read_text())   # row 0 read back


def test_score_warns_once_at_the_callers_line(scoring, monkeypatch):
    """Both protocols for real (tiny model, 2 sampler steps, quick-profile sizes), with a cheap
    stand-in for Inception: one SmallSampleWarning per score call, pointing here."""
    proj = torch.randn(3 * 32 * 32, 16, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(network, "features", lambda images, **kw: (
        network.to_three_channels(images.float()).flatten(1) @ proj).numpy())
    spec = evaluation.SamplerSpec(steps=2)
    for reuse in (False, True):  # computed, then read back
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = evaluation.score(scoring, spec=spec, reuse=reuse)
        small = [w for w in caught if issubclass(w.category, fid.SmallSampleWarning)]
        assert len(small) == 1, [str(w.message) for w in small]
        assert small[0].filename == __file__
    assert np.isfinite(out["report"]["average"]) and np.isfinite(out["standard"]["pooled"])


def test_corrupt_results_file_is_recomputed_with_a_warning(scoring, fake_evaluate):
    path = evaluation.tables.result_path("class_1", "")
    evaluation.score(scoring, protocols=("standard",))
    path.write_text(path.read_text()[:40])  # a write cut short
    with pytest.raises(ValueError, match=f"{path.name} is corrupt"):
        evaluation.load_scores(["class_1"])
    with pytest.warns(UserWarning, match=f"{path.name} is corrupt.*again") as caught:
        evaluation.score(scoring, protocols=("standard",))
    assert len([w for w in caught if "is corrupt" in str(w.message)]) == 1   # said once
    assert len(fake_evaluate) == 2
    assert evaluation.load_scores(["class_1"])["class_1"]["standard"]["pooled"] == 1.0


def test_cli_scores_a_preset(scoring, fake_evaluate, monkeypatch, capsys):
    from diffnb import training

    monkeypatch.setattr(training, "load_or_train", lambda name: scoring)
    evaluation.scoring.main(["class_1", "--protocol", "report"])
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "class_1" and out["protocols"] == ["report"]
    assert [c[0] for c in fake_evaluate] == ["report"]
    assert evaluation.tables.result_path("class_1", "__report").exists()  # not the both-protocol file
    assert not evaluation.tables.result_path("class_1", "").exists()


def test_cli_rejects_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        evaluation.scoring.main(["no_such_preset"])
    assert "known presets" in capsys.readouterr().err


def test_slide8_shows_the_standard_protocol_only_where_it_was_scored():
    scores = {"class_1": _fake_score("Class Conditional 1", 0), "class_2": _fake_score("Class Conditional 2", 10)}
    del scores["class_1"]["standard"]
    t8 = evaluation.slide8_table(scores)
    assert np.isnan(t8["ours, standard (pooled)"].iloc[0]) and t8["ours, standard (pooled)"].iloc[1] == 70.0
    assert t8["ours, report protocol"].tolist() == [scores[n]["report"]["average"] for n in scores]


def test_best_only_profiles_score_the_standard_protocol_for_the_best_report_model(monkeypatch):
    """standard_for="best": every model gets the report protocol, the lowest Average FID alone
    the standard one (its own file); standard_for="all": both for every model."""
    calls = []

    def fake_score(trained, *, seed, protocols, tag, profile):
        calls.append((trained, protocols, tag))
        avg = {"class_1": 30.0, "class_2": 20.0, "class_3": 25.0}[trained]
        return {pr: {"average": avg, "pooled": avg + 1} for pr in protocols}

    monkeypatch.setattr(evaluation.scoring, "score", fake_score)
    names = ["class_1", "class_2", "class_3"]
    best = runtime.PROFILES["cpu"]
    assert best.standard_for == "best"
    scores = evaluation.scoring.report_models(names, profile=best, trained=lambda n: n)
    assert [c for c in calls if c[1] == ("standard",)] == [("class_2", ("standard",), "__standard")]
    assert [n for n, s in scores.items() if "standard" in s] == ["class_2"]
    assert all(c[2] == "__report" for c in calls if c[1] == ("report",))
    calls.clear()
    evaluation.scoring.report_models(names, profile=best, trained=lambda n: n, standard=False)
    assert all(c[1] == ("report",) for c in calls) and len(calls) == 3
    calls.clear()
    scores = evaluation.scoring.report_models(names, profile=runtime.PROFILES["quick"],
                                              trained=lambda n: n)
    assert calls == [(n, fid.PROTOCOLS, "") for n in names]
    assert all("standard" in s for s in scores.values())


def test_studies_score_at_the_profiles_study_size():
    cpu = runtime.PROFILES["cpu"]
    study = evaluation.scoring.study_profile(cpu)
    assert (study.fid_standard_n, study.fid_standard_per_class) == (cpu.fid_study_n, cpu.fid_study_n // 10)
    assert study.fid_report_per_class == cpu.fid_report_per_class and study.name == cpu.name
    quick = runtime.PROFILES["quick"]
    assert quick.fid_study_n is None and evaluation.scoring.study_profile(quick) is quick
    with pytest.raises(ValueError, match="standard_for='some'; use 'all' or 'best'"):
        runtime.Profile(name="x", epochs_scale=1.0, epoch_images=None, valid_images=None,
                        grid_samples=1, per_class_samples=1, fid_report_per_class=1, fid_standard_n=1,
                        fid_standard_per_class=1, fid_test_n=None, sampler_steps=1, standard_for="some")


def test_notebook_06s_best_gets_both_protocols_at_the_profiles_full_size(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluation.scoring, "score", lambda trained, **kw: calls.append(
        (kw.get("protocols", evaluation.scoring.fid.PROTOCOLS), kw["tag"], kw["profile"])) or {})
    change = evaluation.Change("best", "unet_attn_cfg")
    for name in ("cpu", "quick"):
        evaluation.scoring.best_change("t", change, profile=runtime.PROFILES[name])
    assert calls == [(("report", "standard"), "__best", runtime.PROFILES[name])
                     for name in ("cpu", "quick")]
    assert runtime.PROFILES["cpu"].fid_standard_n > runtime.PROFILES["cpu"].fid_study_n  # not the ablation's
