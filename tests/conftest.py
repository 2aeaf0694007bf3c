import os

import pytest

# Tests run in the quick profile on whatever device is there, unless told otherwise.
os.environ.setdefault("DIFFNB_PROFILE", "quick")


@pytest.fixture
def tmp_checkpoints(tmp_path, monkeypatch):
    """Checkpoints of a test go to a temporary folder, never to the project's checkpoints/."""
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


@pytest.fixture
def random_class_model():
    """A tiny class-conditional denoiser with random (not zero-initialised) weights, eval mode:
    its output depends on the label and the seed."""
    import torch
    from diffnb import models
    from diffnb.config import ModelConfig
    from diffnb.precond import Denoiser

    torch.manual_seed(0)
    net = models.build(ModelConfig(arch="class", nb_channels=8, num_blocks=1, cond_channels=8))
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, std=0.2)
    return Denoiser(net, sigma_data=0.66).eval()
