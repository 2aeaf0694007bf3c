"""Configurations: frozen dataclasses, and the report's eight models as named presets (slide 8).

Parameter names are the report's (``nb_channels``, ``num_blocks``, ``cond_channels``). A profile
(``runtime.profile()``) changes loop sizes only, through :func:`scaled`; architectures never change.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from diffnb import runtime
from diffnb.diffusion import noise

ARCHS = ("base", "condbn", "class", "unet")
DATASETS = ("fashion_mnist", "celeba")  # diffnb.training.datasets: the splits and sigma_data of each


@dataclass(frozen=True)
class ModelConfig:
    """A denoiser network. ``arch``: base (no noise input), condbn (slide 6), class (slide 7), unet."""

    arch: str
    nb_channels: int
    num_blocks: int
    cond_channels: int
    channel_mult: tuple[int, ...] = (1, 2, 2)   # unet only: widths per level (32, 16, 8 px)
    attention: bool = False                     # unet only: self-attention at the lowest resolution
    zero_init: bool = True                      # improved initialisation (conditional nets only)
    image_channels: int = 1                     # 1: Fashion-MNIST; 3: CelebA (RGB)
    image_size: int = 32                        # image side: 32 (Fashion-MNIST padded), 64 (CelebA)
    num_attributes: int = 0                     # 0: classes; > 0: multi-hot attributes (CelebA)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; use one of {ARCHS}")
        if self.cond_channels % 2:
            raise ValueError(f"cond_channels must be even (cos/sin pairs), got {self.cond_channels}")

    @property
    def class_conditional(self) -> bool:
        return self.arch in ("class", "unet")


@dataclass(frozen=True)
class TrainConfig:
    """Training of one preset. Defaults are the report's: Adam, lr 1e-3, batch 32, no EMA."""

    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"       # or "cosine": linear warm-up then cosine decay to 0
    warmup_fraction: float = 0.0        # share of all steps spent warming up (cosine only)
    ema_decay: float | None = None      # None: sample with the raw weights (the report)
    label_dropout: float = 0.0          # classifier-free guidance: P(label -> null class)
    P_mean: float = noise.P_MEAN        # EDM Table 1
    P_std: float = noise.P_STD
    seed: int = 0
    epoch_images: int | None = None     # None: the whole split (datasets.epoch_images)
    valid_images: int | None = None     # None: the whole 10k validation split
    dataset: str = "fashion_mnist"      # or "celeba" (diffnb.training.datasets); a default: old keys stay

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; use one of {DATASETS}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; use 'constant' or 'cosine'")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    model: ModelConfig
    train: TrainConfig
    report_fid: float | None = None     # slide 8's "Average FID", for comparison tables
    notes: str = field(default="", compare=False)
    profile: str | None = field(default=None, compare=False)  # set by scaled()

    @property
    def short(self) -> str:
        m = self.model
        return f"{m.nb_channels}/{m.num_blocks}/{m.cond_channels}, {self.train.epochs} ep"

    @property
    def params_text(self) -> str:
        m = self.model
        return (f"nb_channels={m.nb_channels}, num_blocks={m.num_blocks}, "
                f"cond_channels={m.cond_channels} ({self.train.epochs}ep)")


def _report(name, title, arch, nb_channels, num_blocks, cond_channels, epochs, fid) -> Preset:
    model = ModelConfig(arch=arch, nb_channels=nb_channels, num_blocks=num_blocks,
                        cond_channels=cond_channels)
    return Preset(name=name, title=title, model=model, train=TrainConfig(epochs=epochs),
                  report_fid=fid)


# Slide 8, in the report's order.
REPORT_PRESETS = (
    _report("base_1", "Base Model", "base", 64, 8, 32, 50, 127.18),
    _report("base_2", "Base Model", "base", 128, 8, 64, 50, 113.27),
    _report("condbn_1", "Cond. BatchNorm2d 1", "condbn", 128, 6, 32, 50, 113.73),
    _report("condbn_2", "Cond. BatchNorm2d 2", "condbn", 128, 8, 64, 50, 107.05),
    _report("class_1", "Class Conditional 1", "class", 128, 6, 32, 50, 89.56),
    _report("class_2", "Class Conditional 2", "class", 128, 8, 64, 50, 87.83),
    _report("class_3", "Class Conditional 3", "class", 128, 6, 32, 100, 89.88),
    _report("class_4", "Class Conditional 4", "class", 128, 8, 64, 100, 87.86),
)
PRESETS: dict[str, Preset] = {p.name: p for p in REPORT_PRESETS}

# Slide 9: per-class FID of Class Conditional 1-4 (T-shirt ... Boot).
REPORT_PER_CLASS_FID = {
    "class_1": (133.04, 53.28, 80.15, 75.14, 82.55, 113.3, 86.5, 83.14, 120.5, 68.08),
    "class_2": (137.15, 46.14, 83.54, 79.88, 91.1, 113.13, 80.36, 76.29, 106.8, 63.89),
    "class_3": (135.52, 55.20, 90.01, 73.28, 78.87, 114.8, 91.26, 84.59, 104.88, 70.23),
    "class_4": (143.98, 46.52, 86.13, 78.49, 87.51, 116.65, 85.5, 69.1, 102.39, 62.43),
}


def register(preset: Preset) -> Preset:
    """Add a preset (notebook 06's improvements) so that it can be looked up by name."""
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def scaled(preset: Preset, profile: runtime.Profile | None = None) -> Preset:
    """The preset with the profile's loop sizes (epochs, images per epoch, batch); nothing else.

    Idempotent: a preset already scaled to ``profile`` is returned as it is. A profile with a
    larger ``train_batch`` than the preset's raises the batch, one with a smaller
    ``max_train_batch`` lowers it; either way the learning rate is scaled by the square root of
    the ratio (the square-root rule for Adam, Malladi et al. 2022).
    """
    profile = profile or runtime.profile()
    if preset.profile == profile.name:
        return preset
    if preset.profile is not None:
        raise ValueError(f"preset {preset.name!r} is already scaled to the {preset.profile!r} "
                         f"profile; scale the unscaled preset to {profile.name!r} instead")
    train = preset.train
    epochs = dict(profile.epochs).get(preset.name,
                                      max(1, round(train.epochs * profile.epochs_scale)))
    train = replace(train, epochs=epochs,
                    epoch_images=profile.epoch_images or train.epoch_images,
                    valid_images=profile.valid_images or train.valid_images)
    batch = train.batch_size
    if profile.train_batch and profile.train_batch > batch:
        batch = profile.train_batch
    if profile.max_train_batch and profile.max_train_batch < batch:
        batch = profile.max_train_batch
    if batch != train.batch_size:
        ratio = batch / train.batch_size
        train = replace(train, batch_size=batch, lr=train.lr * ratio ** 0.5)
    return replace(preset, train=train, profile=profile.name)


def as_dict(preset: Preset) -> dict:
    return asdict(preset)


def _non_defaults(obj) -> dict:
    """Fields that differ from their defaults: a new option with a default keeps old keys valid."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)
            if f.default is MISSING or getattr(obj, f.name) != f.default}


def run_key(preset: Preset) -> str:
    """Identifies a training run up to its length: with a constant learning rate, a 100-epoch run
    starts as the 50-epoch run of the same configuration, so both share one key and the longer
    one resumes from the shorter one's checkpoint. A schedule that depends on the length does not."""
    d = {"model": _non_defaults(preset.model), "train": _non_defaults(preset.train)}
    if preset.train.lr_schedule == "constant":
        d["train"].pop("epochs")
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# Notebook 06: from the report's best configuration (class_2) to a better model, one change at a
# time (slide 11's "LR scheduler" and "UNet", EDM's EMA and Heun, classifier-free guidance).
_BEST = PRESETS["class_2"]
_SCHED = replace(_BEST.train, lr_schedule="cosine", warmup_fraction=0.02)
_UNET = ModelConfig(arch="unet", nb_channels=64, num_blocks=2, cond_channels=128,
                    channel_mult=(1, 2, 2))
_UNET_TRAIN = replace(_SCHED, batch_size=128, lr=2e-3, ema_decay=0.999)
IMPROVEMENT_PRESETS = (
    Preset(name="class_2_sched_ema", title="+ warm-up/cosine LR, EMA", model=_BEST.model,
           train=replace(_SCHED, ema_decay=0.999),
           notes="one run: its raw weights are the '+ LR schedule' row, its EMA the '+ EMA' row"),
    Preset(name="unet", title="UNet", model=_UNET, train=_UNET_TRAIN),
    Preset(name="unet_attn", title="UNet + attention", model=replace(_UNET, attention=True),
           train=_UNET_TRAIN),
    Preset(name="unet_attn_cfg", title="UNet + attention + CFG training",
           model=replace(_UNET, attention=True), train=replace(_UNET_TRAIN, label_dropout=0.1)),
)
for _p in IMPROVEMENT_PRESETS:
    register(_p)

# Notebook 07 (slide 11's "face generation using CelebA"): the UNet with one more level for 3x64x64
# (64 -> 32 -> 16 -> 8 px, self-attention at 8x8), conditioned on celeba.DEFAULT_ATTRIBUTES
# (Smiling, Male, Eyeglasses: num_attributes=3) through the class embedding's path, with label
# dropout for classifier-free guidance, EMA and warm-up + cosine LR; trained on CelebA's own
# splits and sigma_data (diffnb.training.datasets). 9.2M weights, 10.4 GFLOP per forward pass.
# Batch 128 at lr 7e-4 (the full profile's batch 256: lr 1e-3 by the square-root rule).
# Full profile on one H200: 40 epochs of 160k images at batch 256 = 6.4M images x 3 x 10.4 GFLOP
# = 199 PFLOP (flops.preset_train_flops), ~13 min at the queue's assumed 250 TFLOP/s in bf16 (a
# run cut by --deadline resumes at its last epoch).
_CELEBA_UNET = ModelConfig(arch="unet", nb_channels=64, num_blocks=2, cond_channels=256,
                           channel_mult=(1, 2, 2, 2), attention=True, image_channels=3,
                           image_size=64, num_attributes=3)
_CELEBA_TRAIN = TrainConfig(epochs=40, batch_size=128, lr=7e-4, lr_schedule="cosine",
                            warmup_fraction=0.02, ema_decay=0.999, label_dropout=0.1,
                            valid_images=4096, dataset="celeba")
CELEBA_PRESETS = (
    Preset(name="celeba_unet", title="UNet 64x64, CelebA attributes", model=_CELEBA_UNET,
           train=_CELEBA_TRAIN),
    # The same network family, 24x fewer FLOPs (0.43 GFLOP): notebook 07 on CI's synthetic folder
    # in seconds (tests/test_celeba.py). Not a model to read faces from.
    Preset(name="celeba_unet_tiny", title="UNet 64x64 (CI size)",
           model=replace(_CELEBA_UNET, nb_channels=16, num_blocks=1, cond_channels=64),
           train=_CELEBA_TRAIN, notes="CI's size for notebook 07 on synthetic faces"),
)
for _p in CELEBA_PRESETS:
    register(_p)
