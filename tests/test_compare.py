"""diffnb.run.compare: a re-made course against the committed one."""
import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from diffnb.run import compare


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def course(tmp_path):
    """A repository with two figures and one table of profile p committed."""
    (tmp_path / "figures/p").mkdir(parents=True)
    (tmp_path / "results/p").mkdir(parents=True)
    grey = np.full((8, 8), 100)
    (tmp_path / "figures/p/same.png").write_bytes(png(grey))
    (tmp_path / "figures/p/grid.png").write_bytes(png(grey))
    (tmp_path / "figures/p/gone.png").write_bytes(png(grey))
    (tmp_path / "results/p/t.csv").write_text("model,fid,note\nclass_1,138.7,a\nclass_3,122.0,b\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "run")
    return tmp_path


def test_equal_files_and_the_largest_differences_are_found(course):
    changed = np.full((8, 8), 100)
    changed[0, :2] = [103, 90]                                  # 2 of 64 pixels, largest 10
    (course / "figures/p/grid.png").write_bytes(png(changed))
    (course / "figures/p/gone.png").unlink()
    (course / "figures/p/extra.png").write_bytes(png(changed))
    (course / "results/p/t.csv").write_text("model,fid,note\nclass_1,138.9,a\nclass_3,121.5,b\n")
    got = {d.path.split("/")[-1]: d for d in compare.compare("p", root=course)}
    assert got["same.png"].state == "equal"
    assert (got["grid.png"].state, got["grid.png"].largest) == ("differs", 10.0)
    assert got["grid.png"].where == "3.1% of pixels"
    assert got["gone.png"].state == "missing" and got["extra.png"].state == "new"
    assert got["t.csv"].largest == pytest.approx(0.5) and got["t.csv"].where == "fid"
    said = compare.summary(list(got.values()))
    assert said.startswith("compare: 1 of 5 figures and tables equal to the committed ones")
    assert "figures/p/grid.png: largest pixel difference 10/255, 3.1% of pixels" in said


def test_unchanged_course_is_all_equal(course):
    said = compare.summary(compare.compare("p", root=course))
    assert said == "compare: 4 of 4 figures and tables equal to the committed ones"


def test_tables_whose_words_or_shape_changed_are_called_different(course):
    (course / "results/p/t.csv").write_text("model,fid,note\nclass_1,138.7,c\nclass_3,122.0,b\n")
    (d,) = [d for d in compare.compare("p", root=course) if d.path.endswith(".csv")]
    assert d.largest == float("inf") and d.where == "note"
    (course / "results/p/t.csv").write_text("model,fid,note\nclass_1,138.7,a\n")
    (d,) = [d for d in compare.compare("p", root=course) if d.path.endswith(".csv")]
    assert d.where == "the table's shape"


def test_without_git_it_says_what_is_needed(tmp_path):
    with pytest.raises(RuntimeError, match="needs the repository cloned with git"):
        compare.compare("p", root=tmp_path)
