"""diffnb.evaluation: FID generators reuse samples, tables are built from results files."""
import pytest
import torch

from diffnb import config, data, evaluation


def test_generator_reuses_samples_as_prefixes(random_class_model):
    gen = evaluation.Generator(random_class_model, evaluation.SamplerSpec(steps=3))
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
    from types import SimpleNamespace
    from diffnb import fid, runtime
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_evaluate(gen, *, protocol, seed, class_conditional):
        calls.append(protocol)
        return {"protocol": protocol, "pooled": 1.0}
    monkeypatch.setattr(fid, "evaluate", fake_evaluate)
    preset = config.scaled(config.get_preset("class_1"))
    trained = SimpleNamespace(preset=preset, raw=random_class_model, denoiser=random_class_model,
                              history={"epoch_seconds": [1.0]})
    evaluation.score(trained, protocols=("standard",))
    evaluation.score(trained, protocols=("standard",))
    assert calls == ["standard"]                       # reused on this machine
    for stamp in (tmp_path / "cache" / "scores").glob("*"):
        stamp.unlink()                                 # as in a fresh clone: results/ only
    evaluation.score(trained, protocols=("standard",))
    assert calls == ["standard", "standard"]
