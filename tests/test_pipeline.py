"""The GPU run queue rehearsed on the CPU (diffnb.pipeline + diffnb.transport).

A tiny profile's queue runs once without interruption, and once cut by deadlines into
"commands" with pack -> wipe every output (a cold machine) -> unpack between them, as on the
borrowed GPU. Both must end with the same weights and the same numbers. No timing is asserted:
the deadlines are fractions of the uninterrupted run's own time, and the property holds wherever
the cuts land.
"""
import json
import shutil

import pytest
import torch

from diffnb import pipeline, runtime, transport
from diffnb.fid import generated

STAGES = ["train:class_2+class_4", "train:base_1", "fid:class_4", "study:class0_bug"]
TIMING_KEYS = {"seconds", "eval_seconds", "train_seconds", "epoch_seconds", "images_per_second",
               "device", "prior_seconds", "torch"}


def _use(root, monkeypatch):
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(root))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(root / "checkpoints"))
    # features of generated images are the machine's: a cold one has none, so every stage
    # computes them again (Inception's weights and the real-image statistics stay shared)
    monkeypatch.setattr(generated, "store_dir", lambda: root / "generated_features")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _numbers(root):
    tiny = runtime.PROFILES["tiny"]
    res = root / "results" / "tiny"
    out = {p.relative_to(res).as_posix(): _strip(json.loads(p.read_text()))
           for p in sorted(res.rglob("*.json")) if p.name not in ("timings.json",)}
    state = out.pop("pipeline.json")
    out["stages"] = sorted(state["stages"])
    out["info"] = {k: v["info"] for k, v in state["stages"].items()}
    weights = {}
    for half in sorted((root / "checkpoints" / tiny.name).rglob("*.half.pt")):
        blob = torch.load(half, weights_only=True)
        weights[half.name + half.parent.name] = {k: v.double().sum().item()
                                                 for k, v in blob["model"].items()}
    return out, weights


@pytest.mark.slow
def test_queue_cut_into_cold_commands_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    tiny = runtime.PROFILES["tiny"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _use(whole, monkeypatch)
    r = pipeline.run(tiny, only=STAGES, device="cpu")
    assert r["pending"] == []
    expected = _numbers(whole)

    # Each stage must fit one command (a cold machine loses an unfinished stage): the deadline is
    # a little more than the longest stage of the uninterrupted run, so the cuts fall between
    # stages and inside the shorter trainings.
    state = json.loads((whole / "results/tiny/pipeline.json").read_text())
    stage_seconds = [v["seconds"] for v in state["stages"].values()]
    deadline = 1.2 * max(stage_seconds)
    _use(cut, monkeypatch)
    commands, pending = 0, STAGES
    while pending:
        commands += 1
        assert commands <= 12, f"the queue did not finish in 12 commands; left: {pending}"
        r = pipeline.run(tiny, only=STAGES, device="cpu", deadline_s=deadline)
        pending = r["pending"]
        out = tmp_path / f"OUT{commands}"
        transport.pack(cut, out, profile=tiny)
        shutil.rmtree(cut)                                   # the machine goes cold
        transport.unpack(out, cut)
    assert commands >= 2, "the deadlines did not cut the queue at all"
    assert _numbers(cut) == expected


def test_deadline_too_short_for_one_epoch_says_so_and_loses_nothing(tmp_path, monkeypatch,
                                                                    capsys):
    _use(tmp_path, monkeypatch)
    tiny = runtime.PROFILES["tiny"]
    r = pipeline.run(tiny, only=["train:base_1"], device="cpu", deadline_s=1e-3)
    assert r["pending"] == ["train:base_1"]
    said = capsys.readouterr().out
    assert "too short for even one epoch" in said and "nothing was lost" in said
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))
    assert pipeline.main(["tiny", "--only", "train:base_1", "--deadline", "0.001"]) is None


def test_plan_lists_every_stage_once_with_flops():
    full = runtime.PROFILES["full"]
    names = [s.name for s in pipeline.plan(full)]
    assert len(names) == len(set(names)) and names[-1] == "notebooks"
    # the report's eight presets are trained and scored; class_3/4 continue class_1/2's runs
    assert all(f"fid:{n}" in names for n in ("base_1", "class_3", "class_4"))
    f = pipeline.stage_flops(pipeline.Stage("train:base_1", "train", ("base_1",)), full)
    from diffnb import config, flops, models, training
    p = config.scaled(config.get_preset("base_1"), full)
    images = p.train.epochs * training.steps_per_epoch(p) * p.train.batch_size
    assert f["bf16"] == pytest.approx(3 * flops.forward_flops(models.build(p.model)) * images)


def test_quick_runs_never_overwrite_a_full_runs_notebooks(tmp_path, monkeypatch):
    import nbformat

    from diffnb import execute

    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    nb_full, nb_quick = tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"
    full = nbformat.v4.new_notebook(metadata={"diffnb": {"profile": "full"}})
    nbformat.write(full, nb_full)
    nbformat.write(nbformat.v4.new_notebook(), nb_quick)
    quick = runtime.PROFILES["quick"]
    assert execute.destination(nb_full, quick) == tmp_path / "build/notebooks/quick/01_a.ipynb"
    assert execute.destination(nb_quick, quick) == nb_quick       # not a full run's: in place
    assert execute.destination(nb_full, runtime.PROFILES["full"]) == nb_full
    # and figures/results of other profiles never land in the full run's folders
    assert runtime.output_dir("figures", quick) == tmp_path / "figures" / "quick"
    assert runtime.output_dir("results", runtime.PROFILES["full"]) == tmp_path / "results"


def test_celebas_training_is_planned_only_where_celeba_is_found(tmp_path, monkeypatch, capsys):
    """CelebA cannot be downloaded: without it the queue plans no CelebA stage, says why, and can
    still end "all done" (the GPU runbook repeats its command until it does)."""
    from diffnb import celeba, config, flops, models, training

    _use(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(tmp_path / "no_data"))
    full = runtime.PROFILES["full"]
    assert "train:celeba_unet" not in [s.name for s in pipeline.plan(full)]
    r = pipeline.run(runtime.PROFILES["tiny"], only=["train:celeba*"], device="cpu")
    said = capsys.readouterr().out
    assert "train:celeba_unet is not planned: this machine lacks CelebA" in said
    assert "list_eval_partition.txt" in said and r["pending"] == [] and "all done" in said

    (tmp_path / "data" / "celeba" / celeba.IMAGES).mkdir(parents=True)
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(tmp_path / "data"))
    names = [s.name for s in pipeline.plan(full)]
    assert names[-2:] == ["train:celeba_unet", "notebooks"]
    f = pipeline.stage_flops(pipeline.CELEBA_STAGE, full)
    p = config.scaled(config.get_preset("celeba_unet"), full)
    images = p.train.epochs * training.steps_per_epoch(p) * p.train.batch_size
    net = models.build(p.model)
    assert f["bf16"] == pytest.approx(3 * flops.forward_flops(net, shape=(3, 64, 64), labels=True)
                                      * images) == pytest.approx(flops.preset_train_flops(p, full))
