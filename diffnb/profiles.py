"""Run profiles: the loop sizes of a run, and the named ones (``full``, ``cpu``, ``quick``, ...).

A profile changes loop sizes only (epochs, images per epoch, sample counts, sampler steps); every
architecture stays the report's. Which one a run uses is read once where it starts
(``runtime.profile()``, from ``DIFFNB_PROFILE``) and passed down. [Profiles](../docs/profiles.md)
says what each is for and where it writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """Loop sizes of a run. ``full`` is the report's; ``cpu`` the course's, sized for two CPU
    cores; ``quick`` and ``tiny`` are smoke runs of minutes and seconds."""

    name: str
    epochs_scale: float          # preset epochs are multiplied by this (at least 1 epoch)
    epoch_images: int | None     # images per epoch; None = the whole 50k training split
    valid_images: int | None     # validation images per epoch; None = the whole 10k split
    grid_samples: int            # samples in one sample grid
    per_class_samples: int       # samples per class in the per-class grids
    fid_report_per_class: int    # "report" protocol: generated and real images per class
    fid_standard_n: int          # "standard" protocol: generated images vs the test set
    fid_standard_per_class: int  # "standard" protocol, per class
    fid_test_n: int | None       # "standard" protocol's reference: test images (None = all 10k)
    sampler_steps: int           # Euler steps of the report's sampler
    floor_ns: tuple[int, ...] = ()           # n of the real-vs-real FID curve (notebook 05)
    nfe_steps: dict = field(default_factory=dict)  # solver -> step counts (notebook 06)
    train_batch: int | None = None  # raise smaller preset batches to this (lr * sqrt(ratio))
    max_train_batch: int | None = None  # lower larger preset batches to this (lr * sqrt(ratio))
    heun_steps: int = 18            # Heun steps of notebook 06 (EDM's 18 for 32x32: NFE 35)
    bench_steps: int = 200          # benchmarks/train_speed.py: timed steps of diffnb's loop
    bench_batch: int = 512          # ... at this batch (the naive loop: the same images by 32)
    epochs: tuple[tuple[str, int], ...] = ()  # (preset, epochs) pairs that replace epochs_scale
    standard_for: str = "all"       # report models scored with the standard protocol: "all", or
    #                                 the "best" (lowest report-protocol Average FID) alone
    fid_study_n: int | None = None  # notebook 06's ablation and FID vs NFE: standard protocol's
    #                                 n (a tenth per class); None: fid_standard_n

    def __post_init__(self):
        if self.standard_for not in ("all", "best"):
            raise ValueError(f"Profile {self.name!r}: standard_for={self.standard_for!r}; "
                             "use 'all' or 'best'")


PROFILES = {
    "full": Profile(name="full", epochs_scale=1.0, epoch_images=None, valid_images=None,
                    grid_samples=64, per_class_samples=64, fid_report_per_class=64,
                    fid_standard_n=10_000, fid_standard_per_class=1_000, fid_test_n=None,
                    sampler_steps=50, floor_ns=(16, 32, 64, 128, 256, 512, 1024, 2048, 5000),
                    nfe_steps={"euler": (10, 18, 35, 50, 100), "heun": (6, 10, 18, 26, 50)},
                    train_batch=256, heun_steps=18),
    # Minutes on 2 CPU cores without native bf16 (fp32 at ~0.1 TFLOP/s): every architecture of
    # the report, 2-4 epochs of 64 images, 5 Euler steps or 3 Heun steps (NFE 5 both), a few
    # samples per class. Batches of at most 32, so that every run takes at least 4 steps: with
    # zero-initialised output layers, the label gets its first gradient at the third step.
    "quick": Profile(name="quick", epochs_scale=0.04, epoch_images=64, valid_images=32,
                     grid_samples=16, per_class_samples=4, fid_report_per_class=4,
                     fid_standard_n=40, fid_standard_per_class=4, fid_test_n=200,
                     sampler_steps=5, floor_ns=(4, 8, 16, 32, 64),
                     nfe_steps={"euler": (5, 10), "heun": (3, 6)}, max_train_batch=32,
                     heun_steps=3, bench_steps=2, bench_batch=32),
    # The run queue end to end in the tests (tests/test_pipeline.py): seconds, not minutes.
    "tiny": Profile(name="tiny", epochs_scale=0.04, epoch_images=64, valid_images=64,
                    grid_samples=4, per_class_samples=2, fid_report_per_class=3,
                    fid_standard_n=20, fid_standard_per_class=2, fid_test_n=40,
                    sampler_steps=4, floor_ns=(4, 8), nfe_steps={"euler": (2,), "heun": (2,)},
                    heun_steps=2, bench_steps=1, bench_batch=32),
}

# Two CPU cores (docs/cpu-profile.md): the report's recipe (batch 32, lr 1e-3) for 3 of its 50
# epochs (class_3/class_4: 6 of 100), notebook 06's models at their batch 128; the best of them,
# unet_attn_cfg, 7 epochs. The report protocol at the report's sizes for all eight; the standard
# protocol (10k) for the best of them and notebook 06's best; its other rows at 2,000 samples.
PROFILES["cpu"] = Profile(name="cpu", epochs_scale=0.06, epoch_images=None, valid_images=None,
                          grid_samples=64, per_class_samples=64, fid_report_per_class=64,
                          fid_standard_n=10_000, fid_standard_per_class=1_000, fid_test_n=None,
                          sampler_steps=50, floor_ns=(16, 64, 256, 1024, 5000),
                          nfe_steps={"euler": (10, 18, 35, 50), "heun": (6, 10, 18, 26)},
                          heun_steps=18, bench_steps=20, bench_batch=64,
                          epochs=(("unet_attn_cfg", 7),), standard_for="best",
                          fid_study_n=2_000)

# The report's recipe (batch 32, lr 1e-3) at full size: one flag away from "full".
PROFILES["full-b32"] = replace(PROFILES["full"], name="full-b32", train_batch=None)
