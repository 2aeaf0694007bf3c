"""Kept weights (diffnb.weights, diffnb.gitstore): what is kept, committed into git history out of
the tree, and found again by a fresh clone without training."""
import json
import shutil
import subprocess

import pytest
import torch

from diffnb import checkpoints, config, gitstore, runtime, training, weights

FULL, TINY = runtime.PROFILES["full"], runtime.PROFILES["tiny"]


def test_kept_parts_cover_every_weight_a_study_samples():
    assert weights.raw_sampled(FULL) == {"class_2_sched_ema"}
    kept = {p.name: weights.parts(p, FULL) for p in (*config.REPORT_PRESETS,
                                                      *config.IMPROVEMENT_PRESETS)}
    assert all(kept[p.name] == ("model",) for p in config.REPORT_PRESETS)
    assert kept["class_2_sched_ema"] == ("model", "ema")
    assert kept["unet"] == kept["unet_attn"] == kept["unet_attn_cfg"] == ("ema",)


def test_an_ema_only_file_samples_with_its_ema_weights():
    from dataclasses import replace

    unet = config.get_preset("unet")
    preset = config.scaled(replace(unet, model=replace(unet.model, nb_channels=16, num_blocks=1,
                                                       cond_channels=16)), TINY)
    st = training.make_state(preset, torch.device("cpu"))
    for p in st.ema.parameters():
        p.data.add_(1.0)                                   # EMA and raw weights now differ
    blob = weights.kept_blob(checkpoints.state_blob(st, preset, profile=TINY), ("ema",))
    assert blob["model"] is None and blob["kept"] == ["ema"] and "optimizer" not in blob
    again = training.make_state(preset, torch.device("cpu"))
    checkpoints.restore(again, blob, preset=preset,
                        path=checkpoints.committed_path(preset, TINY, epochs=2))
    for module in (again.denoiser, again.ema):
        for k, v in module.state_dict().items():
            torch.testing.assert_close(v, st.ema.state_dict()[k].half().to(v.dtype))


def test_sizes_count_two_bytes_a_kept_weight():
    (row,) = weights.sizes(FULL, names=["base_1"])
    assert row["parts"] == "model"
    assert 0 < row["kept_bytes"] - 2 * row["parameters"] < 64 * 1024
    # model, Adam's two moments, in fp32
    assert 0 < row["resume_bytes"] - 12 * row["parameters"] < 256 * 1024


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
    (root / ".gitignore").write_text("/weights/*/*.half.pt\n/weights/*/*.resume.pt\n"
                                     "/checkpoints/\n/.cache/\n")
    _git(root, "add", ".gitignore")
    _git(root, "commit", "-q", "-m", "start")
    monkeypatch.setattr(runtime, "project_root", lambda: root)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(root))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(root / "checkpoints"))
    monkeypatch.delenv(runtime.COMMIT_ENV, raising=False)
    runtime.code_commit.cache_clear()                        # this checkout's commit
    yield root
    runtime.code_commit.cache_clear()


def test_a_fresh_clone_loads_the_kept_weights_without_training(repo, tmp_path, monkeypatch,
                                                                small_group):
    small_group()
    trained = training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    (runtime.stamps_dir() / "tiny_t_short.json").write_text('{"stamp": 1}')
    run = checkpoints.run_dir(trained.preset, TINY).name    # t_long goes on from its e0002.pt
    assert weights.keep(TINY) == [checkpoints.committed_path(trained.preset, TINY, epochs=2).name,
                                  f"{run}-e0002.resume.pt"]
    assert weights.keep(TINY) == []                          # already kept: left alone
    manifest = weights.read_manifest(TINY)["files"]
    (entry,) = manifest.values()
    assert entry["preset"] == "t_short" and entry["epochs"] == 2 and entry["parts"] == ["model"]
    assert entry["device"] == "cpu" and entry["torch"] == str(torch.__version__)
    assert entry["commit"] == _git(repo, "rev-parse", "HEAD")
    assert weights.check(TINY) == []

    a, b = weights.commit(TINY)
    assert _git(repo, "rev-parse", "HEAD") == b and _git(repo, "rev-parse", "HEAD~1") == a
    name = f"weights/tiny/{next(iter(manifest))}"
    assert name in _git(repo, "ls-tree", "-r", "--name-only", a)
    assert name not in _git(repo, "ls-tree", "-r", "--name-only", b)   # out of the tree
    assert _git(repo, "status", "--porcelain") == "?? weights/tiny/scores/"
    assert json.loads(_git(repo, "show", f"{b}:weights/tiny/MANIFEST.json"))["files"][
        name.rsplit("/", 1)[1]]["kept_in"] == a
    assert weights.commit(TINY) is None                      # nothing new

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    monkeypatch.setattr(runtime, "project_root", lambda: clone)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(clone))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(clone / "checkpoints"))  # none: a fresh one

    def no_training(*args, **kwargs):
        raise AssertionError("a kept model was trained again")
    monkeypatch.setattr(training, "train", no_training)
    again = training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    assert again.finished and len(again.history["train_loss"]) == 2
    for k, v in trained.denoiser.state_dict().items():
        torch.testing.assert_close(again.denoiser.state_dict()[k], v, rtol=0, atol=0)
    assert (clone / name).exists()                           # written back from history
    # notebook 04's picker in a run of another profile: the kept run's pick, nothing trained
    picked = training.best_final(["t_short"], profile=TINY, device="cpu")
    assert (picked.preset.name, picked.profile, picked.finished) == ("t_short", "tiny", True)
    assert training.best_final(["t_short", "t_long"], profile=TINY, device="cpu") is None

    (clone / "weights/tiny/scores").mkdir(parents=True)      # scores/ was not committed here:
    (clone / "weights/tiny/scores/tiny_t_short.json").write_text('{"stamp": 1}')  # as if it were
    assert weights.restore(TINY)["stamps"] == 1
    assert (runtime.stamps_dir() / "tiny_t_short.json").read_text() == '{"stamp": 1}'


def test_notebook_04s_pick_writes_back_only_the_picked_kept_model(repo, tmp_path, monkeypatch,
                                                                  small_group):
    """``training.best_final`` reads the kept models' final validation losses from the manifest
    and writes back from git history only the one it picks: what a CPU reader's picker costs."""
    small_group()
    trained = [training.load_or_train(n, profile=TINY, device="cpu", progress=False)
               for n in ("t_short", "t_long")]
    weights.keep(TINY)
    weights.commit(TINY)
    assert {e["preset"]: e["valid_loss"] for e in weights.read_manifest(TINY)["files"].values()} \
        == {t.preset.name: t.history["valid_loss"][-1] for t in trained}
    best = min(trained, key=lambda t: t.history["valid_loss"][-1])

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    monkeypatch.setattr(runtime, "project_root", lambda: clone)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(clone))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(clone / "checkpoints"))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained a kept model"))
    assert not list((clone / "weights/tiny").glob("*.half.pt"))
    assert all(checkpoints.is_finished(config.scaled(t.preset, TINY), TINY) for t in trained)
    picked = training.best_final(["t_short", "t_long"], profile=TINY, device="cpu")
    assert (picked.preset.name, picked.profile) == (best.preset.name, "tiny")
    assert [p.name for p in (clone / "weights/tiny").glob("*.half.pt")] == \
        [checkpoints.committed_path(best.preset, TINY, epochs=best.preset.train.epochs).name]
    for k, v in best.denoiser.state_dict().items():
        torch.testing.assert_close(picked.denoiser.state_dict()[k], v, rtol=0, atol=0)

    # a reader with a GPU who trains every model: the kept ones, written back or not, go unused
    monkeypatch.setenv(checkpoints.TRAIN_ANEW_ENV, "1")
    assert checkpoints.find_final(config.scaled(best.preset, TINY), TINY) is None
    assert checkpoints.final_valid_loss(config.scaled(best.preset, TINY), TINY) is None
    assert not checkpoints.is_finished(config.scaled(best.preset, TINY), TINY)
    assert training.best_final(["t_short", "t_long"], profile=TINY, device="cpu") is None
    monkeypatch.setattr(training, "train", lambda preset, **k: ("trained", preset.name))
    assert training.load_or_train(best.preset.name, profile=TINY, device="cpu") == \
        ("trained", best.preset.name)
    monkeypatch.setenv(checkpoints.TRAIN_ANEW_ENV, "yes")
    with pytest.raises(ValueError, match="DIFFNB_TRAIN_ANEW='yes': use 1"):
        checkpoints.find_final(config.scaled(best.preset, TINY), TINY)


def test_a_shallow_clone_says_so_and_a_bare_tree_goes_without(repo, tmp_path, monkeypatch,
                                                               small_group):
    small_group()
    training.load_or_train("t_short", profile=TINY, device="cpu", progress=False)
    weights.keep(TINY)
    weights.commit(TINY)
    shallow = tmp_path / "shallow"
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    monkeypatch.setattr(runtime, "project_root", lambda: shallow)
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(shallow / "checkpoints"))
    preset = config.scaled(config.get_preset("t_short"), TINY)
    with pytest.raises(checkpoints.CheckpointError, match="full clone"):
        checkpoints.find_final(preset, TINY)
    # the tree as it travels to a borrowed GPU (no .git): listed, not used, no error
    copy = tmp_path / "copy"
    shutil.copytree(shallow, copy, ignore=shutil.ignore_patterns(".git"))
    monkeypatch.setattr(runtime, "project_root", lambda: copy)
    with pytest.warns(UserWarning, match="not a git checkout"):
        assert checkpoints.find_final(preset, TINY) is None


def test_an_unfinished_run_goes_on_in_a_fresh_clone_from_its_kept_resume_point(
        repo, tmp_path, monkeypatch, small_group):
    """A session's end with a training cut: `keep` + `commit` put its resume point into git
    history, `restore` in a fresh clone writes it back and the run goes on from it, bit for bit;
    once the run is finished its entry goes."""
    small_group()
    long = config.scaled(config.get_preset("t_long"), TINY)
    training.train(long, profile=TINY, device="cpu", progress=False, stop_after=1)
    run = checkpoints.run_dir(long, TINY)
    assert any("resume point of" in p for p in weights.check(TINY))  # not kept: flagged
    assert weights.keep(TINY) == [f"{run.name}-e0001.resume.pt"]
    assert weights.check(TINY) == []
    training.train(long, profile=TINY, device="cpu", progress=False, stop_after=1)
    assert weights.keep(TINY) == [f"{run.name}-e0002.resume.pt"]      # replaces epoch 1's
    assert list(weights.read_manifest(TINY)["resume"]) == [f"{run.name}-e0002.resume.pt"]
    a, b = weights.commit(TINY)
    assert ": 1 resume point, " in _git(repo, "log", "-1", "--format=%s", a)
    name = f"weights/tiny/{run.name}-e0002.resume.pt"
    assert name in _git(repo, "ls-tree", "-r", "--name-only", a)
    assert name not in _git(repo, "ls-tree", "-r", "--name-only", b)
    expected = training.train(long, profile=TINY, device="cpu", progress=False)  # uninterrupted

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    monkeypatch.setattr(runtime, "project_root", lambda: clone)
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(clone))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(clone / "checkpoints"))
    restored = weights.restore(TINY)
    assert restored["resume"] == [run.name]
    assert weights.restore(TINY)["resume"] == []                      # already there
    again = training.train(long, profile=TINY, device="cpu", progress=False)
    assert again.resumed_from == 2 and again.finished
    for k, v in expected.denoiser.state_dict().items():
        torch.testing.assert_close(again.denoiser.state_dict()[k], v, rtol=0, atol=0)
    kept = weights.keep(TINY)
    assert weights.read_manifest(TINY)["resume"] == {} and kept      # finished: models kept


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


def test_blob_ids_are_gits(tmp_path):
    (tmp_path / "f").write_bytes(b"some bytes\x00\xff")
    _git(tmp_path, "init", "-q")
    assert gitstore.blob_id(b"some bytes\x00\xff") == _git(tmp_path, "hash-object", "f")
