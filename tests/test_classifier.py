"""The classifier beside FID (diffnb.evaluation.classifier): its measures, its kept weights, its training."""
import json

import pytest
import torch

from diffnb import data, runtime
from diffnb.evaluation import classifier


class Fixed(classifier.Classifier):
    """Reads every image as the class given by its top-left pixel (0..9)."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float() + 0 * self.head[2].bias


def _images(classes):
    x = torch.zeros(len(classes), 1, 32, 32)
    x[:, 0, 0, 0] = x[:, 0, 0, -1] = torch.tensor(classes, dtype=torch.float)  # and mirrored
    return x


def test_own_class_share_and_histogram_count_what_the_classifier_reads():
    model = Fixed()
    asked = torch.tensor([0, 0, 0, 0, 1, 1] + list(range(2, 10)))
    read = [0, 0, 0, 5, 1, 7] + list(range(2, 10))
    share = classifier.own_class_share(model, _images(read), asked)
    assert share[0] == 0.75 and share[1] == 0.5 and share[2:] == [1.0] * 8
    hist = classifier.class_histogram(model, _images([3, 3, 3, 9]))
    assert hist[3] == 0.75 and hist[9] == 0.25 and sum(hist) == pytest.approx(1.0)


def test_augment_shifts_within_the_padding_and_keeps_the_shape():
    x = -torch.ones(64, 1, 32, 32)
    x[:, :, 2:30, 2:30] = 1.0                      # a 28x28 image in its 2-pixel padding
    out = classifier._augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out == 1.0).sum(dim=(1, 2, 3)).eq(28 * 28).all()   # shifted, never cut
    assert not torch.equal(out, x)


@pytest.fixture
def kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    model = classifier.Classifier()
    monkeypatch.setattr(classifier, "per_class_accuracy", lambda m, s: [0.5] * 10)
    classifier.save(model, {"valid_accuracy": [0.5], "train_seconds": 1.0})
    return tmp_path / "weights" / "classifier"


def test_a_changed_classifier_file_is_refused_with_how_to_restore_it(kept):
    classifier.load()
    path = kept / "classifier.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"classifier.safetensors does not match.*git checkout"):
        classifier.load()
    path.unlink()
    with pytest.raises(FileNotFoundError, match="python -m diffnb.evaluation.classifier train"):
        classifier.load()


@pytest.mark.slow
def test_a_short_training_learns_more_than_chance():
    model, history = classifier.train(epochs=1, train_images=1024, log=lambda *a: None)
    assert history["valid_accuracy"][0] > 0.2               # chance: 0.1, after 8 steps


@pytest.mark.slow
def test_the_kept_classifier_reads_real_test_images_as_its_manifest_says():
    """The committed weights: >= 93% on the 10k test set, per class as recorded."""
    manifest = classifier.manifest()
    assert manifest["test_accuracy"] >= 0.93
    acc = classifier.per_class_accuracy(classifier.load(), data.test_set())
    for name, a in zip(data.CLASS_NAMES, acc):
        assert a == pytest.approx(manifest["test_accuracy_per_class"][name], abs=2e-3), name
    assert json.loads((classifier.folder() / "MANIFEST.json").read_text())["epochs"] >= 1
