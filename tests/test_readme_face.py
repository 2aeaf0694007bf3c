"""The README's first screen (diffnb.run.readme): made from a run's files, written only for a kept,
complete profile, and only between its markers."""
import json
import re

import pandas as pd
import pytest

from diffnb import runtime
from diffnb.run import readme

ROWS = [{"preset": "class_1", "model": "Class Conditional 1", "report FID (slide 8)": 89.56,
         "ours, report protocol": 71.234, "floor (report)": 40.5,
         "ours, standard (pooled)": float("nan"), "n report": 64},
        {"preset": "unet", "model": "UNet", "report FID (slide 8)": float("nan"),
         "ours, report protocol": 55.55, "floor (report)": 40.5, "ours, standard (pooled)": 12.3,
         "n report": 64}]


def fake_run(root, *, complete=True, profile="cpu"):
    (root / "figures" / profile).mkdir(parents=True)
    (root / "results" / profile).mkdir(parents=True)
    (root / "weights" / profile).mkdir(parents=True)
    (root / "figures" / profile / "s10_per_class_grids.json").write_text(json.dumps(
        {"preset": "class_3", "solver": "euler", "steps": 50, "seed": 0, "samples_per_class": 8,
         "device": "Some CPU"}))
    pd.DataFrame(ROWS).to_csv(root / "results" / profile / "s08_fid_models.csv", index=False)
    for name in ("s08_fid_models.png", "s10_per_class_grids.png"):   # a PNG's first bytes
        (root / "figures" / profile / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    files = {  # class_3 continues class_1's run: its seconds include class_1's
        "class_1.safetensors": dict(preset="class_1", run_key="a", train_seconds=3600.0,
                                    images_seen=150_000, cpu="CPU A", epochs_on=None),
        "class_3.safetensors": dict(preset="class_3", run_key="a", train_seconds=7200.0,
                                    images_seen=300_000, cpu="CPU A",
                                    epochs_on={"CPU B": 1, "not recorded": 5}),
        "unet.safetensors": dict(preset="unet", run_key="b", train_seconds=1800.0,
                                 images_seen=100_000, cpu="CPU A", epochs_on={"CPU A": 2})}
    (root / "weights" / profile / "MANIFEST.json").write_text(json.dumps(
        {"complete": complete, "files": files, "profile": profile, "resume": {}}))
    (root / "README.md").write_text(f"# title\n\nintro\n\n{readme.START}\nold face\n"
                                    f"{readme.END}\n\n## Start\nrest\n")


def test_face_is_made_from_the_runs_files(tmp_path):
    fake_run(tmp_path)
    assert readme.write(runtime.PROFILES["cpu"], tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# title\n\nintro\n\n" + readme.START) and text.endswith(
        readme.END + "\n\n## Start\nrest\n") and "old face" not in text
    assert "(figures/cpu/s10_per_class_grids.png)" in text and "`class_3`" in text
    assert "| Class Conditional 1 | class_1 | 89.6 | 71.2 | 40.5 | 3 / 50 |" in text
    assert "| UNet | unet | - | 55.5 | 40.5 | 2 / " in text
    # 3 models; run "a" counted once (2 h) + run "b" (0.5 h); both CPUs named; 2 to 6 epochs
    assert "The 3 models trained for 2.5 hours" in text
    assert "on CPU A and CPU B." in text and "2 to 6 epochs" in text
    # what the repository's own README test asks of a cpu opening (tests/test_notebook_outputs.py)
    from test_notebook_outputs import readme_opening_problems

    table = pd.read_csv(tmp_path / "results" / "cpu" / "s08_fid_models.csv")
    assert readme_opening_problems(text, profile="cpu", table=table, root=tmp_path) == []
    assert readme.write(runtime.PROFILES["cpu"], tmp_path)          # again: the same text
    assert (tmp_path / "README.md").read_text() == text


@pytest.mark.parametrize("profile,complete", [("quick", True), ("cpu", False)])
def test_quick_or_unfinished_runs_leave_the_readme_alone(tmp_path, profile, complete):
    fake_run(tmp_path, complete=complete, profile=profile)
    before = (tmp_path / "README.md").read_text()
    assert not readme.write(runtime.PROFILES[profile], tmp_path)
    assert (tmp_path / "README.md").read_text() == before


def test_missing_markers_or_files_say_what_to_do(tmp_path):
    fake_run(tmp_path)
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="put them where the face goes"):
        readme.write(runtime.PROFILES["cpu"], tmp_path)
    (tmp_path / "results" / "cpu" / "s08_fid_models.csv").unlink()
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        readme.face(tmp_path, "cpu")


def test_the_repositorys_readme_has_the_markers_once():
    text = (runtime.project_root() / "README.md").read_text()
    assert readme.rewrite(text, readme.START + "\nx\n" + readme.END).count(readme.START) == 1


def test_the_readmes_retraining_time_is_the_kept_best_models():
    """The README's hours for retraining the best model are its manifest's training seconds."""
    root = runtime.project_root()
    manifest = json.loads((root / "weights" / "cpu" / "MANIFEST.json").read_text())
    kept = manifest["files"]["unet_attn_cfg.safetensors"]
    said = re.search(r"`unet_attn_cfg` \((\d+) epochs, ([\d,]+)\s+images\), trained in ([\d.]+) "
                     r"hours", " ".join((root / "README.md").read_text().split()))
    assert said, "README.md no longer states the best model's retraining time"
    assert int(said[1]) == kept["epochs"]
    assert int(said[2].replace(",", "")) == round(kept["images_seen"], -4)
    assert float(said[3]) == round(kept["train_seconds"] / 3600, 1)


def test_the_cpu_profiles_training_hours_are_the_kept_models():
    """docs/cpu-profile.md's table: each model's epochs, images and hours are its manifest's, a
    continued run's own hours are its seconds beyond the run it continues, and the total counts
    each run once."""
    root = runtime.project_root()
    manifest = json.loads((root / "weights" / "cpu" / "MANIFEST.json").read_text())
    kept = {f["preset"]: f for f in manifest["files"].values() if f.get("preset")}
    doc = (root / "docs" / "cpu-profile.md").read_text()
    rows = {m[0]: m[1:] for m in re.findall(
        r"^\| (\w+) \| (\d+) \(\d+\)[^|]*\| ([\d,]+) \| [\d.]+ \| (.+) \|$", doc, re.M)}
    assert sorted(rows) == sorted(kept), "docs/cpu-profile.md's table lists other models"
    for name, (epochs, images, hours) in rows.items():
        f = kept[name]
        assert int(epochs) == f["epochs"] and int(images.replace(",", "")) == f["images_seen"]
        said = [float(x) for x in re.findall(r"\d+\.\d+", hours)]
        assert said[0] == round(f["train_seconds"] / 3600, 2), name
        earlier = [g for g in kept.values() if g["run_key"] == f["run_key"] and g is not f
                   and g["epochs"] < f["epochs"]]
        if earlier:   # "6.49 (class_2's 3.34 + 3.15)"
            before = earlier[0]["train_seconds"] / 3600
            assert said[1:] == [round(before, 2), round(f["train_seconds"] / 3600 - before, 2)]
    total = re.search(r"^\| \*\*all twelve\*\* \|.*\| \*\*([\d.]+)\*\*", doc, re.M)
    assert total and float(total[1]) == round(readme.training_seconds(manifest) / 3600, 1)


def test_the_readmes_notebook_minutes_are_the_committed_runs():
    """The README's minutes for the notebooks are the committed cpu run's notebooks stage."""
    root = runtime.project_root()
    stage = json.loads((root / "results" / "cpu" / "pipeline.json").read_text())["stages"]
    said = re.search(r"Its notebooks take most of that \(([\d.]+) minutes in the committed run",
                     " ".join((root / "README.md").read_text().split()))
    assert said, "README.md no longer states how long the notebooks take"
    assert float(said[1]) == round(stage["notebooks"]["seconds"] / 60, 1)
