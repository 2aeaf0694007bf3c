"""CelebA at 64x64 (diffnb.celeba) on a tiny synthetic folder in torchvision's layout, and the
3x64x64 attribute-conditional models (forward, loss, sampling)."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from diffnb import celeba, conditioning, models, sampling
from diffnb.config import ModelConfig
from diffnb.data import DataNotFoundError
from diffnb.precond import Denoiser

NAMES = ("5_o_Clock_Shadow", "Eyeglasses", "Male", "Smiling", "Young")
SPLIT_OF = [0] * 20 + [1] * 5 + [2] * 5  # 30 images: 20 train, 5 valid, 5 test
OUTER = (20, 200, 20)
VALUES = np.random.default_rng(0).choice([-1, 1], size=(len(SPLIT_OF), len(NAMES)))  # attributes


def inner_colour(i: int) -> tuple[int, int, int]:
    return (8 * i, 255 - 8 * i, 128)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no $DIFFNB_DATA_DIR, one thread."""
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFNB_DATA_DIR", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
                 "list_eval_partition.txt", "list_attr_celeba.txt", "cannot be downloaded here"):
        assert part in text
    with pytest.raises(DataNotFoundError, match=r"\$DIFFNB_DATA_DIR is not set"):
        celeba.load("train")


# ---- 3x64x64 models with attributes ----------------------------------------------------------

def unet64(**kw) -> ModelConfig:
    return ModelConfig(arch="unet", nb_channels=8, num_blocks=1, cond_channels=16,
                       channel_mult=(1, 2, 2, 2), image_channels=3, image_size=64,
                       num_attributes=3, **kw)


def randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.1)
    return module


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


def test_attributes_change_the_output_and_null_is_not_all_zero():
    net = randomise(models.build(unet64())).eval()
    x, c_noise = torch.randn(1, 3, 64, 64), torch.zeros(1)
    out = {k: net(x, c_noise, v) for k, v in {"smiling": torch.tensor([[1, 0, 0]]),
                                               "zero": torch.tensor([[0, 0, 0]]),
                                               "null": None}.items()}
    assert not torch.allclose(out["smiling"], out["zero"])
    assert not torch.allclose(out["zero"], out["null"])
    torch.testing.assert_close(out["null"], net(x, c_noise, conditioning.null_like(
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
