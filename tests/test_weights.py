"""Kept weights (diffnb.run.weights): finished models as safetensors files with a checksummed
manifest, resume points of cut trainings as plain files; found again by a fresh clone without
training, and refused with a way out when corrupt."""
import hashlib
import json
import subprocess

import pytest
import torch

from diffnb import config, runtime, training
from diffnb.run import weights
from diffnb.training import checkpoints, loop

FULL, TINY = runtime.PROFILES["full"], runtime.PROFILES["tiny"]


def test_kept_parts_cover_every_weight_a_study_samples():
    assert weights.raw_sampled(FULL) == {"class_2_sched_ema"}
    kept = {p.name: weights.parts(p, FULL) for p in (*config.REPORT_PRESETS,
                                                      *config.IMPROVEMENT_PRESETS)}
    assert all(kept[p.name] == ("model",) for p in config.REPORT_PRESETS)
    assert kept["class_2_sched_ema"] == ("model", "ema")
    assert kept["unet"] == kept["unet_attn"] == kept["unet_attn_cfg"] == ("ema",)


def _git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A checkout of its own: the project's ignore rule for kept weights, one commit."""
    root = tmp_path / "origin"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "test")
    (root / ".gitignore").write_text("/checkpoints/\n/.cache/\n")
    _git(root, "add", ".gitignore")
    _git(root, "commit", "-q", "-m", "start")
    monkeypatch.setattr(runtime, "project_root", lambda: root)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(root))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(root / "checkpoints"))
    monkeypatch.delenv(runtime.COMMIT_ENV, raising=False)
    runtime.code_commit.cache_clear()                        # this checkout's commit
    yield root
    runtime.code_commit.cache_clear()


def _clone(repo, tmp_path, monkeypatch):
    """Commit everything (the kept files are plain files) and point diffnb at a fresh clone."""
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "kept weights")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    monkeypatch.setattr(runtime, "project_root", lambda: clone)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(clone))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(clone / "checkpoints"))  # none: a fresh one
    return clone


def test_an_ema_only_file_samples_with_its_ema_weights(repo):
    from dataclasses import replace

    unet = config.get_preset("unet")
    preset = config.scaled(replace(unet, model=replace(unet.model, nb_channels=16, num_blocks=1,
                                                       cond_channels=16)), TINY)
    st = training.make_state(preset, torch.device("cpu"))
    for p in st.ema.parameters():
        p.data.add_(1.0)                                   # EMA and raw weights now differ
    data = weights._safetensors_bytes(checkpoints.state_blob(st, preset, profile=TINY), ("ema",))
    path = checkpoints.kept_path(preset, TINY)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    (path.parent / checkpoints.KEPT_MANIFEST).write_text(json.dumps({"files": {path.name: {
        "sha256": hashlib.sha256(data).hexdigest(), "run_key": config.run_key(preset)}}}))
    blob = checkpoints.load(path)
    assert blob["model"] is None and blob["kept"] == ["ema"] and "optimizer" not in blob
    again = training.make_state(preset, torch.device("cpu"))
    checkpoints.restore(again, blob, preset=preset, path=path)
    for module in (again.denoiser, again.ema):
        for k, v in module.state_dict().items():
            torch.testing.assert_close(v, st.ema.state_dict()[k].half().to(v.dtype))


def test_a_fresh_clone_loads_the_kept_weights_without_training(repo, tmp_path, monkeypatch,
                                                                small_group):
    small_group()
    trained = training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    run = checkpoints.run_dir(trained.preset, TINY).name    # t_long goes on from its e0002.pt
    assert weights.keep(TINY) == ["t_short.safetensors", f"{run}.resume.pt"]
    assert weights.keep(TINY) == []                          # already kept: left alone
    manifest = checkpoints.read_kept_manifest(TINY)
    entry = manifest["files"]["t_short.safetensors"]
    assert entry["preset"] == "t_short" and entry["epochs"] == 2 and entry["parts"] == ["model"]
    assert entry["images_seen"] == 2 * trained.preset.train.epoch_images
    assert entry["cpu"] == runtime.cpu_model() and entry["torch"] == str(torch.__version__)
    assert entry["commit"] == _git(repo, "rev-parse", "HEAD")
    assert entry["valid_loss"] == trained.history["valid_loss"][-1]
    assert entry["train_seconds"] == round(sum(trained.history["epoch_seconds"]), 1)
    assert manifest["resume"][f"{run}.resume.pt"]["for"] == ["t_long"]
    assert weights.check(TINY) == []
    card = (repo / "weights/tiny/README.md").read_text()
    assert "| `t_short.safetensors` |" in card and f"`{run}.resume.pt`: epoch 2, for t_long" in card

    clone = _clone(repo, tmp_path, monkeypatch)
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained a kept model"))
    again = training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    assert again.finished and len(again.history["train_loss"]) == 2
    for k, v in trained.denoiser.state_dict().items():
        torch.testing.assert_close(again.denoiser.state_dict()[k], v, rtol=0, atol=0)
    assert not (clone / "checkpoints").exists()              # read in place, nothing written
    assert weights.check(TINY) == []
    # notebook 04's picker: the kept run's pick, its loss read from the manifest
    picked = training.best_final(["t_short"], profile=TINY, device="cpu")
    assert (picked.preset.name, picked.profile, picked.finished) == ("t_short", "tiny", True)
    assert training.best_final(["t_short", "t_long"], profile=TINY, device="cpu") is None

    # a reader who trains every model: the kept ones go unused
    monkeypatch.setenv(checkpoints.TRAIN_ANEW_ENV, "1")
    preset = config.scaled(config.get_preset("t_short"), TINY)
    assert checkpoints.find_final(preset, TINY) is None
    assert checkpoints.final_valid_loss(preset, TINY) is None
    monkeypatch.setenv(checkpoints.TRAIN_ANEW_ENV, "yes")
    with pytest.raises(ValueError, match="DIFFNB_TRAIN_ANEW='yes': use 1"):
        checkpoints.find_final(preset, TINY)


def test_a_corrupt_or_missing_kept_file_is_refused_with_how_to_restore_it(
        repo, tmp_path, monkeypatch, small_group):
    small_group()
    training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    weights.keep(TINY)
    clone = _clone(repo, tmp_path, monkeypatch)
    preset = config.scaled(config.get_preset("t_short"), TINY)
    path = clone / "weights/tiny/t_short.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1                                            # one flipped bit in a weight
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"t_short.safetensors does not match the sha256.*git checkout -- "):
        training.load_or_train(preset, profile=TINY, device="cpu", progress=False)
    (problem,) = weights.check(TINY)
    assert "t_short.safetensors" in problem and "git checkout -- weights/" in problem
    _git(clone, "checkout", "--", "weights/")                # what the message says
    assert weights.check(TINY) == []
    path.unlink()
    with pytest.raises(checkpoints.CheckpointError, match="listed in MANIFEST.json but missing"):
        checkpoints.find_final(preset, TINY)
    _git(clone, "checkout", "--", "weights/")
    mpath = clone / "weights/tiny/MANIFEST.json"             # the kept loss no longer matches
    manifest = json.loads(mpath.read_text())
    manifest["files"]["t_short.safetensors"]["check_loss"] += 0.01
    mpath.write_text(json.dumps(manifest))
    (problem,) = weights.check(TINY)
    assert problem.startswith("t_short.safetensors: loss ") and "on the fixed batch" in problem


def test_an_unfinished_run_goes_on_in_a_fresh_clone_from_its_kept_resume_point(
        repo, tmp_path, monkeypatch, small_group):
    """A training cut by its deadline: `keep` writes its last.pt as a plain resume point (one per
    run, replaced), a fresh clone goes on from it bit for bit, and once finished it goes."""
    small_group()
    long = config.scaled(config.get_preset("t_long"), TINY)
    training.train(long, profile=TINY, device="cpu", progress=False, stop_after=1)
    run = checkpoints.run_dir(long, TINY)
    assert weights.keep(TINY) == [f"{run.name}.resume.pt"]
    assert checkpoints.read_kept_manifest(TINY)["resume"][f"{run.name}.resume.pt"]["epoch"] == 1
    training.train(long, profile=TINY, device="cpu", progress=False, stop_after=2)
    assert weights.keep(TINY) == [f"{run.name}.resume.pt"]          # replaces epoch 1's
    assert checkpoints.read_kept_manifest(TINY)["resume"][f"{run.name}.resume.pt"]["epoch"] == 3
    expected = training.train(long, profile=TINY, device="cpu", progress=False)  # uninterrupted

    clone = _clone(repo, tmp_path, monkeypatch)
    here = runtime.device_name()
    monkeypatch.setattr(runtime, "device_name", lambda: "another CPU")     # goes on elsewhere
    again = training.train(long, profile=TINY, device="cpu", progress=False)
    assert again.resumed_from == 3 and again.finished
    for k, v in expected.denoiser.state_dict().items():
        torch.testing.assert_close(again.denoiser.state_dict()[k], v, rtol=0, atol=0)
    assert weights.keep(TINY) == ["t_long.safetensors"]
    entry = checkpoints.read_kept_manifest(TINY)["files"]["t_long.safetensors"]
    assert entry["epochs_on"] == {here: 3, "another CPU": long.train.epochs - 3}
    assert checkpoints.read_kept_manifest(TINY)["resume"] == {}
    assert not (clone / f"weights/tiny/{run.name}.resume.pt").exists()


def test_the_commit_is_dirty_for_changed_code_not_for_rewritten_outputs(repo, monkeypatch):
    """runtime.code_commit, which the manifest above and every sidecar record: ``+dirty`` only
    for changed code, not for the figures, notebooks and README a run rewrites."""
    for path in ("diffnb/a.py", "figures/s03_x.json", "notebooks/01.ipynb", "README.md"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "code and outputs")

    def commit():
        runtime.code_commit.cache_clear()                    # the fixture clears it afterwards
        return runtime.code_commit()
    head = _git(repo, "rev-parse", "HEAD")
    for path in ("figures/s03_x.json", "notebooks/01.ipynb", "README.md"):
        (repo / path).write_text("2\n")                     # what a run rewrites
    (repo / "diffnb/new.py").write_text("untracked\n")
    assert commit() == head
    (repo / "diffnb/a.py").write_text("2\n")
    assert commit() == head + "+dirty"
    monkeypatch.setenv(runtime.COMMIT_ENV, "abc123")          # a tree without its history
    assert commit() == "abc123"


@pytest.mark.slow
@pytest.mark.parametrize("name", weights.KEPT_PROFILES)
def test_the_committed_kept_files_check_out(name):
    """The repository's own kept weights: sha256, load, and the loss on the fixed batch equal to
    the manifest's within 1e-3; resume points by sha256."""
    profile = runtime.PROFILES[name]
    if not (checkpoints.kept_dir(profile) / checkpoints.KEPT_MANIFEST).exists():
        pytest.skip(f"no weights/{name}/ in this checkout")
    assert weights.check(profile) == []
