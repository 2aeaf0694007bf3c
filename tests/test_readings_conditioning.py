"""diffnb.course.readings.conditioning: the per-class panels of notebook 04. Each test builds
panels whose variety is known (one picture repeated, or images of a chosen spread) and checks
that the reading names the right panels and numbers, in more than one order of the classes."""
import re

import numpy as np
import pytest

from diffnb.course import readings

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def panels(scales, n=4, seed=0):
    """K panels of n images 1x4x4 in [-1, 1]: panel k is one picture plus noise of scale
    scales[k] (0: the same picture n times)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.5, 0.5, size=(len(scales), 1, 1, 4, 4))
    noise = rng.uniform(-1, 1, size=(len(scales), n, 1, 4, 4))
    x = base + np.asarray(scales, dtype=float)[:, None, None, None, None] * noise
    return x.reshape(len(scales) * n, 1, 4, 4)


def spread(panel):
    n = len(panel)
    return np.mean([np.abs(panel[i] - panel[j]).mean() for i in range(n) for j in range(i + 1, n)])


@pytest.mark.parametrize("seed", range(8))
def test_class_panels_names_the_least_and_most_varied_panels(seed):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.05, 0.5, size=len(CLASSES))
    names = list(rng.permutation(CLASSES))
    x = panels(scales, seed=seed)
    text = readings.class_panels(x, names, model="class_3")
    per = [spread(p) for p in x.reshape(len(names), 4, 1, 4, 4)]
    low, high = names[int(np.argmin(per))], names[int(np.argmax(per))]
    m = re.search(r"differ by (\d\.\d+) on average .*least in (.+?) \((\d\.\d+)\), most in (.+?) "
                  r"\((\d\.\d+)\)", text)
    assert m is not None, text
    assert float(m.group(1)) == pytest.approx(np.mean(per), abs=6e-4)
    assert (m.group(2), m.group(4)) == (low, high)
    assert float(m.group(3)) == pytest.approx(min(per), abs=6e-4)
    assert float(m.group(5)) == pytest.approx(max(per), abs=6e-4)
    assert "4 samples each, drawn by class_3" in text
    assert "one picture repeated, so" not in text


@pytest.mark.parametrize("same", [[0], [2, 7], [9]])
def test_class_panels_names_the_panels_that_repeat_one_picture(same):
    scales = [0.0 if k in same else 0.3 for k in range(len(CLASSES))]
    text = readings.class_panels(panels(scales, n=3), CLASSES, model="class_1")
    verdict = re.search(r"The samples of (.+?) differ by less than", text)
    assert verdict is not None, text
    named = verdict.group(1).replace(" and ", ", ").split(", ")
    assert named == [CLASSES[k] for k in same]
    assert ("that panel is" in text) == (len(same) == 1)
    assert re.search(rf"least in {re.escape(CLASSES[same[0]])} \(0\.000\)", text)


def test_class_panels_reads_a_torch_tensor_like_an_array():
    torch = pytest.importorskip("torch")
    x = panels(np.linspace(0.1, 0.4, len(CLASSES)), n=2)
    assert readings.class_panels(torch.from_numpy(x).float(), CLASSES, model="m") == \
        readings.class_panels(x.astype(np.float32), CLASSES, model="m")


def test_class_panels_compares_upper_body_classes_only_when_they_are_there():
    text = readings.class_panels(panels([0.2] * 10), CLASSES, model="m")
    assert "upper-body classes (T-shirt/top, Pullover, Coat and Shirt)" in text
    others = ["Trouser", "Sandal", "Bag"]
    assert "upper-body" not in readings.class_panels(panels([0.2] * 3), others, model="m")


def test_class_panels_with_one_sample_per_class_reads_no_variety():
    text = readings.class_panels(panels([0.2] * 10, n=1), CLASSES, model="m")
    assert "1 sample each" in text
    assert "differ by" not in text and "Notebook 05" in text


def test_class_panels_refuses_samples_that_do_not_split_into_panels():
    with pytest.raises(ValueError, match="do not split"):
        readings.class_panels(np.zeros((7, 1, 4, 4)), CLASSES, model="m")
