"""CelebA at 64x64 (diffnb.data.celeba) on a tiny synthetic folder in torchvision's layout, the
3x64x64 attribute-conditional models (forward, loss, sampling), training on CelebA through the one
training loop (diffnb.training.datasets), and notebook 07 executed on that folder."""
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diffnb import config, data, models, runtime, training
from diffnb.config import ModelConfig
from diffnb.data import DataNotFoundError, celeba
from diffnb.diffusion import sampling
from diffnb.diffusion.precond import Denoiser
from diffnb.run import execute, flops
from diffnb.training import datasets

NAMES = ("5_o_Clock_Shadow", "Eyeglasses", "Male", "Smiling", "Young")
SPLIT_OF = [0] * 20 + [1] * 5 + [2] * 5  # 30 images: 20 train, 5 valid, 5 test
OUTER = (20, 200, 20)
VALUES = np.random.default_rng(0).choice([-1, 1], size=(len(SPLIT_OF), len(NAMES)))  # attributes


def inner_colour(i: int) -> tuple[int, int, int]:
    return (8 * i, 255 - 8 * i, 128)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, one_thread):
    """A private cache, no $DIFFNB_DATA_DIR, one thread."""
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFNB_DATA_DIR", raising=False)


@pytest.fixture
def folder(tmp_path):
    """<tmp>/data/celeba/{img_align_celeba/*.jpg, list_eval_partition.txt, list_attr_celeba.txt}:
    178x218 JPEGs, one colour in a centred 150x150 square (around the 140x140 crop), another
    outside it; the attributes (-1/1) of VALUES."""
    from PIL import Image

    root = tmp_path / "data" / "celeba"
    (root / celeba.IMAGES).mkdir(parents=True)
    partition, rows = [], []
    for i, split in enumerate(SPLIT_OF):
        name = f"{i + 1:06d}.jpg"
        image = np.full((218, 178, 3), OUTER, dtype=np.uint8)
        image[34:184, 14:164] = inner_colour(i)
        Image.fromarray(image).save(root / celeba.IMAGES / name, quality=95)
        partition.append(f"{name} {split}")
        rows.append(f"{name} " + " ".join(f"{v:2d}" for v in VALUES[i]))
    (root / celeba.PARTITION).write_text("\n".join(partition) + "\n")
    (root / celeba.ATTRIBUTES).write_text(f"{len(SPLIT_OF)}\n{' '.join(NAMES)}\n"
                                          + "\n".join(rows) + "\n")
    return tmp_path / "data"


def test_load_shapes_range_crop_and_attributes(folder):
    train = celeba.load("train", folder=folder, progress=False)
    assert train.images.shape == (20, 3, 64, 64) and train.images.dtype == torch.uint8
    assert len(celeba.load("valid", folder=folder, progress=False)) == 5
    for i in (0, 7, 19):  # the centre crop holds the inner square only
        want = torch.tensor(inner_colour(i), dtype=torch.float32).view(3, 1, 1)
        assert (train.images[i].float() - want).abs().max() <= 8
    columns = [NAMES.index(a) for a in celeba.DEFAULT_ATTRIBUTES]
    want = torch.from_numpy(VALUES[:20, columns] > 0).long()
    assert train.attribute_names == celeba.DEFAULT_ATTRIBUTES
    assert torch.equal(train.attributes, want) and train.labels.dtype == torch.long
    x, a = celeba.sample_batch(train, torch.tensor([0, 3]))
    assert x.shape == (2, 3, 64, 64) and -1.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(a, want[[0, 3]])
    assert 0.05 < celeba.sigma_data(folder) < 1.0
    young = celeba.load("test", folder=folder, attributes=("Young",), progress=False)
    assert young.labels.shape == (5, 1)
    with pytest.raises(ValueError, match="unknown CelebA attribute"):
        celeba.load("test", folder=folder, attributes=("Bald",), progress=False)


def test_the_cache_is_reused(folder, monkeypatch, tmp_path):
    first = celeba.load("train", folder=folder, progress=False)
    files = sorted(p.name for p in (tmp_path / "cache" / "celeba").iterdir())
    assert len(files) == 1 and files[0].startswith("train-64px-crop140-")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a JPEG was decoded again")
    monkeypatch.setattr(celeba, "_decode", no_decoding)
    again = celeba.load("train", folder=folder, progress=False)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_corrupt_jpegs_are_skipped_and_counted(folder):
    images = folder / "celeba" / celeba.IMAGES
    (images / "000002.jpg").write_bytes(b"not a jpeg at all")
    whole = (images / "000005.jpg").read_bytes()
    (images / "000005.jpg").write_bytes(whole[:len(whole) // 3])
    with pytest.warns(UserWarning, match="2 corrupt JPEG"):
        train = celeba.load("train", folder=folder, progress=False)
    assert len(train) == 18
    kept = [i for i in range(20) if i not in (1, 4)]
    for row, i in enumerate(kept[:3]):
        want = torch.tensor(inner_colour(i), dtype=torch.float32).view(3, 1, 1)
        assert (train.images[row].float() - want).abs().max() <= 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read from the cache: no second warning
        assert len(celeba.load("train", folder=folder, progress=False)) == 18


def test_missing_partition_file_is_a_clear_error(folder):
    (folder / "celeba" / celeba.PARTITION).unlink()
    with pytest.raises(DataNotFoundError, match="list_eval_partition.txt is missing"):
        celeba.load("train", folder=folder, progress=False)


def test_missing_images_are_counted_and_refused_beyond_a_small_fraction(folder):
    for i in (3, 4, 5):
        (folder / "celeba" / celeba.IMAGES / f"{i:06d}.jpg").unlink()
    with pytest.raises(ValueError, match="3 of the 20 train images listed .* are missing"):
        celeba.load("train", folder=folder, progress=False)
    with pytest.warns(UserWarning, match="3 of 20 listed images are missing"):
        assert len(celeba.load("train", folder=folder, progress=False, max_missing=0.2)) == 17


def test_absent_folder_names_it_the_layout_and_no_download(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        celeba.load("train", folder=tmp_path / "nowhere")
    text = str(err.value)
    for part in (str(tmp_path / "nowhere"), "celeba/img_align_celeba/000001.jpg",
                 "list_eval_partition.txt", "list_attr_celeba.txt", "needs internet access to download"):
        assert part in text
    with pytest.raises(DataNotFoundError, match=r"\$DIFFNB_DATA_DIR is not set"):
        celeba.load("train")


# ---- 3x64x64 models with attributes ----------------------------------------------------------

def unet64(**kw) -> ModelConfig:
    return ModelConfig(arch="unet", nb_channels=8, num_blocks=1, cond_channels=16,
                       channel_mult=(1, 2, 2, 2), image_channels=3, image_size=64,
                       num_attributes=3, **kw)


def test_unet_64_with_attributes_trains_and_samples():
    torch.manual_seed(0)
    den = Denoiser(models.build(unet64(attention=True)), sigma_data=0.5)
    assert den.image_shape == (3, 64, 64) and den.num_attributes == 3
    y, attributes = torch.randn(2, 3, 64, 64).clamp(-1, 1), torch.tensor([[1, 0, 1], [0, 1, 0]])
    loss = den.loss(y, attributes)
    loss.backward()
    assert torch.isfinite(loss) and den.net.conv_out.weight.grad.abs().sum() > 0
    for labels, guidance in ((None, 1.0), ([[1, 0, 1]], 1.0), ([[1, 0, 1], [0, 0, 0]], 2.0)):
        x = sampling.sample(den, seeds=[0, 1], labels=labels, steps=2, guidance=guidance,
                            amp=False)
        assert x.shape == (2, 3, 64, 64) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="is not a condition"):
        sampling.sample(den, seeds=[0], labels=[[-1, -1, -1]], steps=2)
    with pytest.raises(ValueError, match=r"attribute rows \(N, 3\)"):
        sampling.sample(den, seeds=[0], labels=[3], steps=2)


def test_attributes_change_the_output_and_null_is_not_all_zero(randomise):
    net = randomise(models.build(unet64())).eval()
    x, c_noise = torch.randn(1, 3, 64, 64), torch.zeros(1)
    out = {k: net(x, c_noise, v) for k, v in {"smiling": torch.tensor([[1, 0, 0]]),
                                               "zero": torch.tensor([[0, 0, 0]]),
                                               "null": None}.items()}
    assert not torch.allclose(out["smiling"], out["zero"])
    assert not torch.allclose(out["zero"], out["null"])
    torch.testing.assert_close(out["null"], net(x, c_noise, data.null_like(
        torch.tensor([[1, 0, 0]]))))


def test_resnet_takes_image_channels_and_attributes():
    cfg = ModelConfig(arch="class", nb_channels=8, num_blocks=1, cond_channels=8,
                      image_channels=3, image_size=64, num_attributes=3)
    out = models.build(cfg)(torch.randn(2, 3, 64, 64), torch.zeros(2), torch.tensor([[1, 0, 1]]))
    assert out.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="num_attributes needs arch"):
        models.build(ModelConfig(arch="condbn", nb_channels=8, num_blocks=1, cond_channels=8,
                                 num_attributes=3))
    with pytest.raises(ValueError, match="image_size 36 is not a multiple of 8"):
        models.build(ModelConfig(arch="unet", nb_channels=8, num_blocks=1, cond_channels=8,
                                 channel_mult=(1, 2, 2, 2), image_size=36))


# ---- the data set of a training run (diffnb.training.datasets) and training on CelebA ---------------

def celeba_preset(name: str = "celeba_unet_tiny", **train) -> config.Preset:
    """A CelebA preset scaled to the tiny profile, with ``train`` fields replaced."""
    p = config.scaled(config.get_preset(name), runtime.PROFILES["tiny"])
    return replace(p, train=replace(p.train, **train))


def test_splits_dispatch_on_the_preset_dataset(folder, monkeypatch):
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(folder))
    s = datasets.splits(celeba_preset())
    assert isinstance(s.train, celeba.Faces) and (len(s.train), len(s.valid)) == (20, 5)
    assert s.train.attribute_names == celeba.DEFAULT_ATTRIBUTES
    assert s.sigma_data == celeba.sigma_data(folder) == datasets.sigma_data(celeba_preset())
    y, labels = data.sample_batch(s.train, torch.tensor([1, 4]))   # the loop's one batch function
    want_y, want_labels = celeba.sample_batch(s.train, torch.tensor([1, 4]))
    assert torch.equal(y, want_y) and torch.equal(labels, want_labels) and y.shape == (2, 3, 64, 64)
    monkeypatch.delenv("DIFFNB_DATA_DIR")     # Fashion-MNIST from Debian's package, as in CI
    fashion = config.get_preset("base_1")
    assert fashion.train.dataset == "fashion_mnist" and datasets.missing(fashion) is None
    train, valid, sd = datasets.splits(fashion)
    assert isinstance(train, data.Images) and (len(train), len(valid)) == (50_000, 10_000)
    assert sd == data.sigma_data()


def test_steps_per_epoch_and_the_too_small_split(folder, monkeypatch):
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(folder))
    whole = celeba_preset(epoch_images=None, batch_size=256)
    assert training.steps_per_epoch(whole) == datasets.EPOCH_IMAGES["celeba"] // 256 == 625
    assert training.steps_per_epoch(replace(whole, train=replace(
        whole.train, dataset="fashion_mnist"))) == 50_000 // 256
    with pytest.raises(ValueError, match="needs more than 20 training images.*holds 20.*epoch_images"):
        datasets.splits(celeba_preset(epoch_images=40, batch_size=20))   # a 2nd batch: empty
    assert len(datasets.splits(celeba_preset(epoch_images=40, batch_size=19)).train) == 20


def test_a_network_that_does_not_fit_its_dataset_is_refused():
    p = celeba_preset()
    with pytest.raises(ValueError, match=r"celeba images are \(3, 64, 64\).*image_channels=3"):
        datasets.check(replace(p, model=replace(p.model, image_size=32, channel_mult=(1, 2, 2))))
    with pytest.raises(ValueError, match="not on classes: set ModelConfig\\(num_attributes=3\\)"):
        datasets.check(replace(p, model=replace(p.model, num_attributes=0)))
    fashion = config.get_preset("unet")
    with pytest.raises(ValueError, match="classes, not attributes"):
        datasets.check(replace(fashion, model=replace(fashion.model, num_attributes=3)))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        config.TrainConfig(epochs=1, dataset="mnist")
    datasets.check(config.get_preset("celeba_unet"))
    for name in ("base_1", "class_2", "unet_attn_cfg"):
        datasets.check(config.get_preset(name))


def test_celeba_presets_and_their_cost():
    p = config.get_preset("celeba_unet")
    assert p.train.dataset == "celeba" and p.model.num_attributes == len(celeba.DEFAULT_ATTRIBUTES)
    assert (p.model.image_channels, p.model.image_size) == (3, 64)
    assert p.train.label_dropout > 0 and p.train.ema_decay and p.train.lr_schedule == "cosine"
    assert datasets.attributes(p) == celeba.DEFAULT_ATTRIBUTES
    net = models.build(p.model)
    assert flops.forward_flops(net, labels=True) == flops.forward_flops(net, shape=(3, 64, 64),
                                                                        labels=True)
    full = runtime.PROFILES["full"]
    s = config.scaled(p, full)
    images = s.train.epochs * training.steps_per_epoch(s) * s.train.batch_size
    assert images == s.train.epochs * 160_000          # batch 256 divides the 160k of an epoch
    cost = flops.preset_train_flops(p, full)
    assert cost == pytest.approx(3 * flops.forward_flops(net, labels=True) * images)
    assert 100e15 < cost < 300e15                      # the config comment: ~199 PFLOP
    tiny = models.build(config.get_preset("celeba_unet_tiny").model)
    assert flops.forward_flops(tiny, labels=True) < flops.forward_flops(net, labels=True) / 10


def test_a_short_celeba_run_through_the_training_loop(folder, monkeypatch, tmp_checkpoints):
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(folder))
    tiny = runtime.PROFILES["tiny"]
    t = training.train(celeba_preset(), profile=tiny, device="cpu", amp=False, progress=False)
    assert t.finished and len(t.history["train_loss"]) == t.preset.train.epochs == 2
    assert all(np.isfinite(t.history["train_loss"] + t.history["valid_loss"]))
    den = t.denoiser
    assert den.sigma_data == pytest.approx(celeba.sigma_data(folder), rel=1e-6)
    assert den.image_shape == (3, 64, 64) and den.num_attributes == 3
    assert t.path.parent.name == "tiny" and (t.path / "e0002.half.pt").exists()
    x = sampling.sample(den, seeds=[0, 1], labels=[[1, 0, 1]], steps=2, guidance=2.0, amp=False)
    assert x.shape == (2, 3, 64, 64) and torch.isfinite(x).all()
    again = training.load_or_train("celeba_unet_tiny", profile=tiny, device="cpu")
    assert again.resumed_from == 2 and again.train_seconds == 0.0       # reused, not retrained
    for a, b in zip(again.denoiser.state_dict().values(), den.state_dict().values()):
        assert torch.equal(a, b)


def test_status_describe_and_attribute_rows(folder, monkeypatch):
    assert not celeba.available(folder / "nowhere")
    absent = celeba.status(folder / "nowhere")
    assert absent == celeba.not_found_message(folder / "nowhere") and "list_attr_celeba.txt" in absent
    assert celeba.available(folder) and celeba.available(folder / "celeba")
    found = celeba.status(folder)
    assert found.startswith("CelebA found: 30 JPEGs") and str(folder) not in found
    rows = celeba.attribute_rows(("A", "B"))
    assert rows.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert [celeba.describe(r, ("A", "B")) for r in rows] == ["none", "B", "A", "A, B"]
    assert celeba.describe([-1, -1], ("A", "B")) == "null (no condition)"
    monkeypatch.setenv("DIFFNB_DATA_DIR", str(folder))
    assert celeba.available() and datasets.missing(config.get_preset("celeba_unet")) is None


def test_first_read_progress_outside_a_terminal_is_finished_lines(folder, capsys):
    from test_notebook_outputs import FROZEN_BAR

    celeba.load("train", folder=folder)                        # progress=True: decodes 20 JPEGs
    out = capsys.readouterr().out
    assert out.startswith("CelebA train: decoding 20 JPEGs once") and "20 of 20 done" in out
    assert "\r" not in out and not FROZEN_BAR.search(out)
    celeba.load("train", folder=folder)                        # from the cache: no progress
    assert capsys.readouterr().out == ""
    lines = list(celeba._progress(iter(range(5)), 5, "valid", True, every=0.0))
    assert lines == list(range(5))
    assert "  1 of 5 (20%)" in capsys.readouterr().out         # a line per `every` seconds


# ---- notebook 07 on the synthetic folder -------------------------------------------------

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "07_celeba_faces.ipynb"
FIGURES = ("data", "loss_curves", "attributes", "guidance", "null")


@pytest.mark.slow
def test_notebook_07_trains_and_samples_on_a_synthetic_folder(folder, tmp_path, monkeypatch):
    """Notebook 07 executed (nbclient, tiny profile, the CI-size preset) on the synthetic folder:
    no error, clean outputs with a reading after every figure, its five figures written under
    a temporary outputs root; the committed notebook is not touched."""
    nbformat = pytest.importorskip("nbformat")
    NotebookClient = pytest.importorskip("nbclient").NotebookClient
    from test_notebook_outputs import notebook_problems, unread_results

    before = NOTEBOOK.read_bytes()
    nb = nbformat.reads(before.decode(), as_version=4)
    preset_cells = [c for c in nb.cells if 'PRESET = "celeba_unet"\n' in c.source]
    assert len(preset_cells) == 1
    preset_cells[0].source = preset_cells[0].source.replace('"celeba_unet"', '"celeba_unet_tiny"')
    root = Path(__file__).resolve().parent.parent
    # The kernel inherits these. One thread: on 2 shared cores, two threads contend (the
    # sampling cells ran 5-20x slower with two under load).
    for key, value in {"DIFFNB_DATA_DIR": folder, "DIFFNB_OUTPUTS": tmp_path / "out",
                       "DIFFNB_CHECKPOINTS": tmp_path / "checkpoints", "DIFFNB_PROFILE": "tiny",
                       "DIFFNB_DEVICE": "cpu", "OMP_NUM_THREADS": 1, "PYTHONPATH": os.pathsep.join(
                           filter(None, [str(root), os.environ.get("PYTHONPATH")]))}.items():
        monkeypatch.setenv(key, str(value))
    work = tmp_path / "notebooks"
    work.mkdir()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    execute.tidy(nb)                                   # as the run queue saves a notebook
    nbformat.write(nb, work / NOTEBOOK.name)
    saved = json.loads((work / NOTEBOOK.name).read_text())
    assert notebook_problems(saved) == [] and unread_results(saved) == []
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "CelebA found: 30 JPEGs" in text and "sigma_data = " in text
    figures = tmp_path / "out" / "figures" / "tiny"
    assert sorted(p.name for p in figures.glob("s11_celeba_*.png")) == sorted(
        f"s11_celeba_{name}.png" for name in FIGURES)
    assert NOTEBOOK.read_bytes() == before
