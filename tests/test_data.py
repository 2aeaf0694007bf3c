"""diffnb.data: counts, shapes, range, split, sigma_data, and the error when nothing is found."""
import gzip

import numpy as np
import pytest
import torch

from diffnb import data


def test_official_splits_counts_shapes_labels():
    train, test = data.load("train"), data.load("test")
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6_000] * 10
    assert torch.bincount(test.labels).tolist() == [1_000] * 10


def test_model_space_padding_and_range():
    x = data.to_model_space(data.load("test").images[:16])
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert (x[:, :, :2, :] == -1).all() and (x[:, :, :, -2:] == -1).all()  # Pad(2) of black
    torch.testing.assert_close(data.to_unit(x), (x + 1) / 2)


def test_split_is_seeded_disjoint_and_sized():
    a_train, a_valid = data.train_valid_split()
    b_train, b_valid = data.train_valid_split()
    assert len(a_train) == 50_000 and len(a_valid) == 10_000
    assert torch.equal(a_valid.images, b_valid.images)
    c_train, _ = data.train_valid_split(seed=1)
    assert not torch.equal(a_train.labels[:100], c_train.labels[:100])
    # disjoint: hash each image and compare
    key = lambda imgs: set(map(bytes, imgs.reshape(len(imgs), -1)[:, ::3].numpy()))
    assert not key(a_train.images[:5000]) & key(a_valid.images)


def test_sigma_data_is_about_the_reports_value():
    assert data.sigma_data() == pytest.approx(0.665, abs=0.005)


def test_class_names_and_label_checks():
    assert data.CLASS_NAMES[0] == "T-shirt/top" and data.CLASS_NAMES[9] == "Ankle boot"
    assert data.check_label(0) == 0
    for bad in (10, -1, 2.5):
        with pytest.raises(ValueError, match="not in 0..9"):
            data.check_label(bad)
    per = data.per_class(data.load("test"), 2)
    assert per.labels.tolist() == [k for k in range(10) for _ in range(2)]


def test_no_source_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nothing-here")
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("test", folder=tmp_path, download=False)
    text = str(err.value)
    assert "DIFFNB_DATA_DIR" in text and "apt-get install dataset-fashion-mnist" in text
    assert "download" in text


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_env_folder_is_read_first_and_validated(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (10_000, 28, 28))
    labels = np.arange(10_000) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    got = data.load("test", download=False)
    assert got.source == str(tmp_path) and np.array_equal(got.images.numpy(), images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:500])  # wrong count
    with pytest.raises(ValueError, match="expected"):
        data.load("test", download=False)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(Exception):
        data.load("test", download=False)
