"""A second measure beside FID: a small Fashion-MNIST classifier, trained by the package, that
reads which class a generated image shows.

FID compares feature statistics; it cannot tell a sandal drawn in the trouser row from a good
trouser. The classifier can: for a class-conditional model, the share of samples classified as
the class they were asked for (per class, beside slide 9's per-class FID); for an unconditional
model, the histogram of the classes its samples show against the data's 10% each. Its own
accuracy on real test images of each class is the ceiling those shares are read against.

    python -m diffnb.evaluation.classifier train    # ~30 min on one CPU core -> weights/classifier/
    python -m diffnb.evaluation.classifier check    # sha256 and test accuracy against the manifest

The network: three conv stages (32, 64, 128 channels, BatchNorm, ReLU, max-pool), dropout and
one linear layer; trained with AdamW, a one-cycle learning rate, label smoothing, random shifts
and flips on the 50k training split; it reads an image and its mirror image together.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from diffnb import data, runtime
from diffnb.results import atomic_write

EPOCHS, BATCH, LR, SEED, WIDTH = 12, 128, 2e-3, 0, 48
RESTORE_HINT = "restore it with `git checkout -- weights/`, or retrain it with " \
               "`python -m diffnb.evaluation.classifier train`"


class Classifier(nn.Module):
    """Model-space images (N, 1, 32, 32) in [-1, 1] -> logits (N, 10)."""

    def __init__(self, width: int = WIDTH):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True)]
        w = width
        self.features = nn.Sequential(*block(1, w), *block(w, w), nn.MaxPool2d(2),
                                      *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                      *block(2 * w, 4 * w), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(4 * w * 4 * 4, data.NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def folder() -> Path:
    return runtime.project_root() / "weights" / "classifier"


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (the padding's room) and horizontal flips."""
    n = len(x)
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = (torch.randint(0, 5, (2, n), generator=generator)).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def probabilities(model: Classifier, x: torch.Tensor, *, batch: int = 500) -> torch.Tensor:
    """(N, 10) class probabilities of model-space images, each read with its mirror image
    (any device; computed on the model's)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([_logits(model, x[i:i + batch].to(dev)).float().cpu() / 2
                      for i in range(0, len(x), batch)])


def predict(model: Classifier, x: torch.Tensor, *, batch: int = 500) -> torch.Tensor:
    """Predicted classes of model-space images (any device; computed on the model's)."""
    return probabilities(model, x, batch=batch).argmax(1)


def _logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """The image and its mirror image read together (the flips it was trained with)."""
    return model(x).softmax(1) + model(x.flip(-1)).softmax(1)


def per_class_accuracy(model: Classifier, split: data.Images) -> list[float]:
    """Accuracy on real images of each class (the ceiling of a generator's own-class share)."""
    pred = predict(model, data.to_model_space(split.images))
    return [float((pred[split.labels == k] == k).float().mean())
            for k in range(data.NUM_CLASSES)]


def own_class_share(model: Classifier, x: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per class: the share of samples asked for that class that the classifier reads as it."""
    pred = predict(model, x)
    return [float((pred[labels == k] == k).float().mean()) for k in range(data.NUM_CLASSES)]


def class_histogram(model: Classifier, x: torch.Tensor) -> list[float]:
    """The share of samples read as each class (an unconditional model's mix of garments)."""
    counts = torch.bincount(predict(model, x), minlength=data.NUM_CLASSES).float()
    return (counts / counts.sum()).tolist()


def train(*, epochs: int = EPOCHS, seed: int = SEED, train_images: int | None = None,
          log=print) -> tuple[Classifier, dict]:
    """Train on the 50k split (or its first ``train_images``); keep the best validation epoch."""
    gen = runtime.seed_everything(seed)
    train_split, valid = data.train_valid_split()
    if train_images:
        train_split = train_split.subset(torch.arange(train_images))
    x_train = data.to_model_space(train_split.images)
    x_valid = data.to_model_space(valid.images)
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = epochs * (len(x_train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps,
                                                pct_start=0.1)
    amp = runtime.default_amp(torch.device("cpu"))
    history, t0 = {"valid_accuracy": []}, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(len(x_train) // BATCH):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            with runtime.autocast("cpu", amp):
                loss = F.cross_entropy(model(_augment(x_train[idx], gen)),
                                       train_split.labels[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        last = epoch == epochs - 1   # a 2,000-image reading per epoch, all 10k at the end
        n = len(x_valid) if last else 2000
        acc = float((predict(model, x_valid[:n]) == valid.labels[:n]).float().mean())
        history["valid_accuracy"].append(acc)
        log(f"classifier: epoch {epoch + 1}/{epochs}, validation accuracy {acc:.4f} "
            f"({n} images)")
    history["train_seconds"] = round(time.perf_counter() - t0, 1)
    return model.eval(), history


def save(model: Classifier, history: dict, *, seed: int = SEED) -> dict:
    """Write the weights (safetensors, fp32: 0.8 MB) and a manifest with the test accuracy."""
    from safetensors.torch import save as to_bytes

    blob = to_bytes({k: v.contiguous() for k, v in model.state_dict().items()})
    test = data.test_set()
    per_class = per_class_accuracy(model, test)        # the test set read once
    counts = torch.bincount(test.labels, minlength=data.NUM_CLASSES).tolist()
    manifest = {"file": "classifier.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
                "test_accuracy": sum(a * n for a, n in zip(per_class, counts)) / len(test),
                "test_accuracy_per_class": dict(zip(data.CLASS_NAMES, per_class)),
                "valid_accuracy": history["valid_accuracy"], "epochs": len(
                    history["valid_accuracy"]), "seed": seed,
                "train_seconds": history["train_seconds"], "cpu": runtime.cpu_model(),
                "torch": str(torch.__version__), "commit": runtime.code_commit()}
    atomic_write(folder() / "classifier.safetensors", blob)
    atomic_write(folder() / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def manifest() -> dict:
    path = folder() / "MANIFEST.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {RESTORE_HINT}")
    return json.loads(path.read_text())


def load() -> Classifier:
    """The kept classifier, its sha256 checked against its manifest."""
    from safetensors.torch import load as from_bytes

    entry, path = manifest(), folder() / "classifier.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {RESTORE_HINT}")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path} does not match the sha256 in its MANIFEST.json: it is corrupt "
                         f"or was changed; {RESTORE_HINT}")
    model = Classifier()
    model.load_state_dict(from_bytes(blob))
    return model.eval()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.evaluation.classifier",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("train", "check"))
    p.add_argument("--epochs", type=int, default=EPOCHS)
    args = p.parse_args(argv)
    if args.action == "train":
        model, history = train(epochs=args.epochs)
        m = save(model, history)
        print(f"classifier: test accuracy {m['test_accuracy']:.4f} in "
              f"{m['train_seconds']:.0f} s; kept in {folder()}")
        return
    acc = per_class_accuracy(load(), data.test_set())
    expected = list(manifest()["test_accuracy_per_class"].values())
    bad = [f"{c}: {a:.4f} != {e:.4f}" for c, a, e in zip(data.CLASS_NAMES, acc, expected)
           if abs(a - e) > 2e-3]
    print("classifier: " + ("; ".join(bad) if bad else "weights and test accuracy check out"))
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
