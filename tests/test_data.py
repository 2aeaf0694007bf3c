"""diffnb.data: counts, shapes, range, split, sigma_data, and the error when nothing is found."""
import gzip

import numpy as np
import pytest
import torch

from diffnb import data
from diffnb.data import fashion_mnist  # where load() looks DEBIAN_DIR up


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


def test_sigma_data_from_the_histogram_equals_a_pass_over_the_images():
    train, _ = data.train_valid_split()
    x = torch.cat([data.to_model_space(c).double().flatten() for c in train.images.split(10_000)])
    assert data.sigma_data() == pytest.approx(x.std(unbiased=False).item(), rel=1e-9)  # float64


def test_class_names_and_label_checks():
    assert data.CLASS_NAMES[0] == "T-shirt/top" and data.CLASS_NAMES[9] == "Ankle boot"
    assert data.check_label(0) == 0
    for bad in (10, -1, 2.5):
        with pytest.raises(ValueError, match="not in 0..9"):
            data.check_label(bad)
    per = data.per_class(data.load("test"), 2)
    assert per.labels.tolist() == [k for k in range(10) for _ in range(2)]


def test_no_source_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nothing-here")
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("test", download=False)
    text = str(err.value)
    assert "DIFFNB_DATA_DIR" in text and "apt-get install dataset-fashion-mnist" in text
    assert "download" in text
    nothing = tmp_path / "nothing-here"
    assert (f"missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] (looked in "
            f"{nothing} and {nothing / 'FashionMNIST' / 'raw'})") in text


def _idx_bytes(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(_idx_bytes(array))
    else:
        path.write_bytes(_idx_bytes(array))


def _write_split(folder, split, n, *, gz=True, n_labels=None):
    """A synthetic split: n random images, n_labels (default n) labels; returns the paths."""
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28))
    labels = np.arange(n if n_labels is None else n_labels) % 10
    paths = [folder / (stem + (".gz" if gz else "")) for stem in data.FILES[split]]
    _write_idx(paths[0], images)
    _write_idx(paths[1], labels)
    return paths, images, labels


def test_env_folder_is_read_first_and_validated(tmp_path, monkeypatch):
    (images_path, labels_path), images, labels = _write_split(tmp_path, "test", 10_000)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    got = data.load("test", download=False)
    assert got.source == str(tmp_path) and np.array_equal(got.images.numpy(), images)
    assert np.array_equal(got.labels.numpy(), labels)
    _write_split(tmp_path, "test", 500)           # consistent files, but not Fashion-MNIST's size
    with pytest.raises(data.DataFileError, match=r"has images \(500, 28, 28\) and labels "
                       r"\(500,\); expected \(10000, 28, 28\) and \(10000,\)\. These are not "
                       r"the official"):
        data.load("test", download=False)


def _gzip_cut(raw: bytes) -> bytes:
    whole = gzip.compress(raw)
    return whole[: len(whole) // 2]                   # the stream ends mid-way


def _gzip_bad_crc(raw: bytes) -> bytes:
    whole = bytearray(gzip.compress(raw))
    whole[-8] ^= 0xFF                                  # the trailer's CRC32 no longer matches
    return bytes(whole)


# name: (gzip?, how the labels file is broken, the message it must give)
CUT_900 = r"is truncated: its header says \[1000\] \(1000 values\), it holds 900"
BROKEN = {
    "gzip-garbage": (True, lambda raw: b"garbage", r"cannot be decompressed \(BadGzipFile"),
    "gzip-cut": (True, _gzip_cut, r"cannot be decompressed \(EOFError"),
    "gzip-bad-crc": (True, _gzip_bad_crc, r"cannot be decompressed \(BadGzipFile: CRC check"),
    "gzip-body-cut": (True, lambda raw: gzip.compress(raw[:-100]), CUT_900),
    "raw-garbage": (False, lambda raw: b"garbage!",
                    r"is not a uint8 IDX file \(bad magic number 67617262\)"),
    "raw-empty": (False, lambda raw: b"",
                  r"is not a uint8 IDX file \(bad magic number none: the file is empty\)"),
    "raw-header-cut": (False, lambda raw: raw[:6],
                       r"is truncated: its header is cut off \(6 bytes\)"),
    "raw-body-cut": (False, lambda raw: raw[:-100], CUT_900),
    "raw-too-long": (False, lambda raw: raw + bytes(7), r"is longer than its header says: its "
                     r"header says \[1000\] \(1000 values\), it holds 1007"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_corrupt_or_truncated_idx_is_a_clear_error_and_nothing_is_lost(case, tmp_path, monkeypatch):
    gz, breaks, message = BROKEN[case]
    (images_path, labels_path), _, labels = _write_split(tmp_path, "test", 1000, gz=gz)
    broken = breaks(_idx_bytes(labels))
    labels_path.write_bytes(broken)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(data.DataFileError, match=message) as err:
        data.load("test", download=False)
    text = str(err.value)
    assert text.startswith(f"Fashion-MNIST file {labels_path} ")
    assert "Nothing was changed or deleted. To fix it, replace the file: copy it again" in text
    assert f"or unset {data.DATA_ENV}" in text
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before   # nothing lost


def test_corrupt_file_of_the_debian_package_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    (images_path, _), _, _ = _write_split(tmp_path, "test", 100)
    images_path.write_bytes(b"garbage")
    with pytest.raises(data.DataFileError,
                       match="sudo apt-get install --reinstall dataset-fashion-mnist"):
        data.load("test", download=False)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_images_and_labels_counts_disagree(gz, tmp_path, monkeypatch):
    (images_path, labels_path), _, _ = _write_split(tmp_path, "test", 10_000, gz=gz, n_labels=9_000)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(data.DataFileError) as err:
        data.load("test", download=False)
    assert str(err.value).startswith(
        f"Fashion-MNIST test files disagree: {images_path} holds 10000 images but {labels_path} "
        "holds 9000 labels, so they do not belong together")
    assert "replace both files" in str(err.value)
    assert images_path.exists() and labels_path.exists()


def test_folder_with_only_the_test_split_names_the_missing_files(tmp_path, monkeypatch):
    """A folder named on purpose is never skipped for another source (the Debian package, present
    or not, must not be mixed in silently): the error says which files are missing, where."""
    _write_split(tmp_path, "test", 10_000)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert len(data.load("test", download=False)) == 10_000
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("train", download=True)
    text = str(err.value)
    assert text.startswith(
        f"Fashion-MNIST train split not found in ${data.DATA_ENV} {tmp_path}: missing "
        f"train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] (looked in {tmp_path} and "
        f"{tmp_path / 'FashionMNIST' / 'raw'}).")
    assert "or unset it to use Debian's package" in text
    test_files = sorted(f + ".gz" for f in data.FILES["test"])
    assert sorted(p.name for p in tmp_path.iterdir()) == test_files
    # the same through the folder= argument, and for half of a split
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.delenv(data.DATA_ENV)
    with pytest.raises(data.DataNotFoundError, match=r"test split not found in folder= .*: missing "
                       r"t10k-labels-idx1-ubyte\[\.gz\] \(looked in "):
        data.load("test", folder=tmp_path, download=False)
