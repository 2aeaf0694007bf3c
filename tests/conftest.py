import os

import pytest

# Tests run in the quick profile on whatever device is there, unless told otherwise.
os.environ.setdefault("DIFFNB_PROFILE", "quick")
if os.environ.get("PYTEST_XDIST_WORKER"):   # `make test` runs two workers on two cores:
    import torch  # one thread each, not two threads each

    torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    """Browser tests run last, after everything else, the notebooks included.

    ``make test`` runs ``pytest tests notebooks``: pytest would run tests/test_browser.py before
    nbval executes notebooks/*.ipynb. The browser test of notebook 04 runs a copy of that
    notebook, which trains class_1..class_4 when their checkpoints do not exist yet (3-8 minutes on
    2 CPU cores in a fresh clone), and nbval then loads them. Run after the notebooks, it finds the
    checkpoints nbval's notebook 04 has just written and only samples: the models are trained once.
    Ordering was chosen over a smaller preset because the browser test's job is to drive the
    notebook as it is, with the models a reader gets. Run alone (``pytest tests``), it still
    trains what is missing."""
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        items[:] = [item for item in items if not item.get_closest_marker("browser")] + browser


def pooled_features(images, **kw):
    """The stand-in for Inception: 4x4 average pooling, 16 numbers per image, image by image."""
    import numpy as np
    import torch.nn.functional as F

    return F.avg_pool2d(images.float().clamp(-1, 1), 8).flatten(1).numpy().astype(np.float32)


@pytest.fixture
def scoring_outputs(tmp_path, monkeypatch):
    """A scoring test's caches and results in tmp_path, and ``pooled_features`` for Inception
    (each image's features computed on their own: they cannot depend on the batch)."""
    from diffnb import runtime
    from diffnb.fid import network

    monkeypatch.setattr(runtime, "project_root", lambda: tmp_path)
    monkeypatch.setenv("DIFFNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(network, "features", pooled_features)
    return tmp_path


@pytest.fixture
def tmp_checkpoints(tmp_path, monkeypatch):
    """Checkpoints of a test go to a temporary folder, never to the project's checkpoints/."""
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests, as each torchrun process (OMP_NUM_THREADS=1):
    two OpenMP threads on two cores shared with other work can run 10x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(module, *, std: float = 0.1, seed: int | None = 0):
    """``module`` (returned) with random instead of zero-initialised conv and linear weights,
    normal with ``std``, drawn after ``torch.manual_seed(seed)`` (None: from the current state):
    the output and every gradient depend on the input, the noise level and the label."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, std=std)
    return module


@pytest.fixture
def randomise():
    """The function ``randomise(module, *, std=0.1, seed=0)`` (see ``_randomise``)."""
    return _randomise


@pytest.fixture
def random_class_model():
    """A tiny class-conditional denoiser with random (not zero-initialised) weights, eval mode:
    its output depends on the label and the seed."""
    import torch

    from diffnb import models
    from diffnb.config import ModelConfig
    from diffnb.diffusion.precond import Denoiser

    torch.manual_seed(0)
    net = models.build(ModelConfig(arch="class", nb_channels=8, num_blocks=1, cond_channels=8))
    return Denoiser(_randomise(net, std=0.2, seed=None), sigma_data=0.66).eval()


@pytest.fixture
def small_group(monkeypatch):
    """A continuation pair like class_2 -> class_4 (one run: 2 then 4 epochs in the tiny
    profile) of a class network ~300x cheaper, made the queue's last training group (after
    ``before``): the run queue's machinery in seconds. Returns the group's stage name."""
    from dataclasses import replace

    from diffnb import config
    from diffnb.run import stages

    def make(*, before=()):
        base = config.get_preset("class_2")
        model = replace(base.model, nb_channels=8, num_blocks=1, cond_channels=8)
        for name, epochs in (("t_short", 50), ("t_long", 100)):
            monkeypatch.setitem(config.PRESETS, name, replace(
                base, name=name, model=model, train=replace(base.train, epochs=epochs)))
        monkeypatch.setattr(stages, "TRAIN_GROUPS", (*before, ("t_short", "t_long")))
        return "train:t_short+t_long"
    return make
