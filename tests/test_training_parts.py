"""The pieces of training, each against its closed form, and checkpoint safety.

Learning-rate schedule, EMA, label dropout, batches, the training step, EDM's weighted loss, and the
checkpoint errors a user can run into (another configuration, another profile, a checkpoint saved on
CUDA, two runs writing the same folder). The pieces are diffnb.training's public helpers
(``lr_factor``, ``ema_decay``, ``ema_update``, ``drop_labels``, ``epoch_generator``, ``batches``,
``TrainStep``); models are tiny (8 channels, 1 block) so that nothing here takes long.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffnb import config, data, runtime, training
from diffnb.data import NULL_CLASS
from diffnb.training import checkpoints, loop

ROOT = Path(__file__).resolve().parents[1]

def tiny(arch="class", **train):
    """A report preset shrunk to seconds: same code paths, 8 channels, 1 block, 64 images per
    epoch, scaled to the quick profile (the two-process test's workers run this same source)."""
    base = config.get_preset("class_1")
    model = replace(base.model, arch=arch, nb_channels=8, num_blocks=1, cond_channels=8)
    t = replace(base.train, **{"epochs": 1, "epoch_images": 64, "valid_images": 32,
                               "batch_size": 16, **train})
    return replace(base, name=f"tiny_{arch}", model=model, train=t, profile="quick")


def binomial_tolerance(p: float, n: int, z: float = 4.0) -> float:
    """z standard deviations of a fraction of n Bernoulli(p) draws. z = 4: a correct
    implementation fails by chance with probability 6e-5 (two-sided normal tail)."""
    return z * math.sqrt(p * (1 - p) / n)


# ---- learning-rate schedule ----------------------------------------------------------------

def test_warmup_cosine_lr_matches_closed_form():
    # 5 epochs x 320 images / batch 16 = T = 100 optimizer steps, warm-up W = 10% = 10 steps.
    p = tiny(lr_schedule="cosine", warmup_fraction=0.1, epochs=5, epoch_images=320)
    T, W = 100, 10
    factor = training.lr_factor(p)

    def closed_form(k):  # linear warm-up to 1 over W steps, then half a cosine to 0 at step T
        return (k + 1) / W if k < W else 0.5 * (1 + math.cos(math.pi * (k - W) / (T - W)))
    assert factor(0) == pytest.approx(0.1)                     # step 0: 1/W of the peak
    assert factor(W - 1) == pytest.approx(1.0)                 # end of warm-up: the peak
    assert factor(W) == pytest.approx(1.0)                     # cosine starts at the peak
    assert factor(W + (T - W) // 2) == pytest.approx(0.5)      # middle of the cosine
    last = 0.5 * (1 + math.cos(math.pi * (T - 1 - W) / (T - W)))
    assert factor(T - 1) == pytest.approx(last) and 0 < last < 1e-3   # last step: almost 0
    for k in range(T):
        assert factor(k) == pytest.approx(closed_form(k), abs=1e-12), k


def test_constant_lr_is_constant():
    factor = training.lr_factor(tiny(epochs=3))
    assert [factor(k) for k in (0, 1, 5, 11)] == [1.0] * 4


# ---- EMA -----------------------------------------------------------------------------------

def test_ema_decay_ramp():
    # min(decay, (1 + step) / (10 + step)): 0.1 at step 0, 0.5 at step 8, then capped at decay.
    assert training.ema_decay(0, 0.999) == pytest.approx(0.1)
    assert training.ema_decay(8, 0.999) == pytest.approx(0.5)
    assert training.ema_decay(79, 0.9) == pytest.approx(80 / 89)   # just below the cap
    assert training.ema_decay(80, 0.9) == pytest.approx(0.9)       # 81 / 90 = 0.9 exactly
    assert training.ema_decay(10**6, 0.999) == pytest.approx(0.999)


def test_ema_after_k_updates_is_the_closed_form():
    """ema_k = d_k ema_{k-1} + (1 - d_k) w_k unrolled: ema_K = (prod_k d_k) ema_0 +
    sum_k (1 - d_k) (prod_{j>k} d_j) w_k, with the weights w_k set by hand at every step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))   # parameters and buffers
    ema = copy.deepcopy(model).requires_grad_(False)
    ema_0 = {k: v.detach().double().clone() for k, v in ema.named_parameters()}
    direction = {k: torch.randn_like(v).double() for k, v in model.named_parameters()}
    K, decay = 12, 0.9
    decays = [training.ema_decay(k, decay) for k in range(K)]
    for k in range(K):
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(direction[name] * (k + 1))           # w_k = (k + 1) * direction
            model[1].running_mean.fill_(float(k))
            model[1].running_var.fill_(float(k + 1))
            model[1].num_batches_tracked.fill_(k)
        training.ema_update(ema, model, decay=decays[k])
    for name, got in ema.named_parameters():
        expected = math.prod(decays) * ema_0[name] + sum(
            (1 - decays[k]) * math.prod(decays[k + 1:]) * direction[name] * (k + 1)
            for k in range(K))
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():                 # the model is left alone
        torch.testing.assert_close(param.double(), direction[name] * K)
    for got, want in zip(ema.buffers(), model.buffers()):        # buffers copied, not averaged
        assert torch.equal(got, want)


# ---- label dropout and batches ---------------------------------------------------------------

def test_label_dropout_fraction_is_binomial():
    p, batches, batch = 0.1, 200, 512
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(batch) % 10                             # includes class 0
    dropped = 0
    for _ in range(batches):
        out = training.drop_labels(labels, p=p, generator=gen)
        assert out.shape == labels.shape and out.dtype == labels.dtype
        kept = out != NULL_CLASS
        assert torch.equal(out[kept], labels[kept]), "labels not dropped must be unchanged"
        dropped += int((~kept).sum())
    n = batches * batch
    assert abs(dropped / n - p) < binomial_tolerance(p, n)
    again = training.drop_labels(labels, p=p, generator=torch.Generator().manual_seed(0))
    first = training.drop_labels(labels, p=p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, first), "the generator alone decides which labels drop"


def test_label_dropout_zero_replaces_none():
    labels = torch.arange(1000) % 10
    out = training.drop_labels(labels, p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, labels)


def synthetic_split(n: int = 256) -> data.Images:
    """Image i is the constant i (so a batch says which images it holds); label i % 10."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    return data.Images(images, torch.arange(n) % 10, "synthetic")


def image_index(y: torch.Tensor) -> torch.Tensor:
    """Inverse of to_model_space at the centre pixel: which synthetic image each row is."""
    return ((y[:, 0, 16, 16] + 1) / 2 * 255).round().long()


def test_batches_cover_an_epoch_without_repeats_and_keep_labels():
    split = synthetic_split()
    p = tiny(epoch_images=128, batch_size=16)                    # 8 batches of 16
    got = list(training.batches(split, p, generator=torch.Generator().manual_seed(0),
                                class_conditional=True))
    assert len(got) == 128 // 16
    seen = []
    for y, labels in got:
        assert y.shape == (16, 1, 32, 32) and y.dtype == torch.float32
        index = image_index(y)
        torch.testing.assert_close(y, data.to_model_space(split.images[index]))
        assert torch.equal(labels, split.labels[index])          # label_dropout = 0
        seen += index.tolist()
    assert len(set(seen)) == len(seen) == 128, "an image came twice in one epoch"
    other = list(training.batches(split, p, generator=torch.Generator().manual_seed(1),
                                  class_conditional=True))
    assert not torch.equal(image_index(other[0][0]), image_index(got[0][0]))


def test_batches_apply_label_dropout():
    split, p_drop, epochs = synthetic_split(), 0.25, 20
    p = tiny(epoch_images=256, batch_size=32, label_dropout=p_drop)
    gen = torch.Generator().manual_seed(0)
    dropped = n = 0
    for _ in range(epochs):
        for y, labels in training.batches(split, p, generator=gen, class_conditional=True):
            kept = labels != NULL_CLASS
            assert torch.equal(labels[kept], split.labels[image_index(y)][kept])
            dropped, n = dropped + int((~kept).sum()), n + len(labels)
    assert n == epochs * 256
    assert abs(dropped / n - p_drop) < binomial_tolerance(p_drop, n)


def test_unconditional_batches_carry_no_labels():
    p = tiny("condbn", epoch_images=64, label_dropout=0.5)
    gen = torch.Generator().manual_seed(0)
    for _, labels in training.batches(synthetic_split(), p, generator=gen, class_conditional=False):
        assert labels is None


def test_epoch_generator_is_fixed_by_seed_and_epoch():
    p, cpu = tiny(), torch.device("cpu")
    draw = lambda gen: torch.randn(4, generator=gen)
    a, b = draw(training.epoch_generator(p, 3, device=cpu)), draw(training.epoch_generator(p, 3, device=cpu))
    assert torch.equal(a, b)
    assert not torch.equal(a, draw(training.epoch_generator(p, 4, device=cpu)))
    reseeded = replace(p, train=replace(p.train, seed=1))
    assert not torch.equal(a, draw(training.epoch_generator(reseeded, 3, device=cpu)))


# ---- the loss and the training step ----------------------------------------------------------

def test_loss_is_edm_weighted_denoising_loss(random_class_model):
    """Karras et al. 2022, eq. 8 and Table 1: E[lambda(sigma) |D(y + sigma n; sigma) - y|^2] with
    lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 and ln(sigma) ~ N(P_mean, P_std^2),
    averaged over images and pixels, recomputed here from the same seeded draws."""
    den = random_class_model
    y = data.to_model_space(data.per_class(data.test_set(), 1).images)   # 10 real images
    labels = torch.arange(10)
    P_mean, P_std = -0.5, 1.5                       # not the defaults: the arguments must be used
    loss = den.loss(y, labels, P_mean=P_mean, P_std=P_std,
                    generator=torch.Generator().manual_seed(3))

    gen = torch.Generator().manual_seed(3)          # the same draws: sigma first, then the noise
    sigma = (P_mean + P_std * torch.randn(10, generator=gen)).exp()
    noise = torch.randn(y.shape, generator=gen)
    with torch.no_grad():
        D = den(y + sigma.view(-1, 1, 1, 1) * noise, sigma, labels)
    sd = den.sigma_data
    lam = ((sigma**2 + sd**2) / (sigma * sd) ** 2).view(-1, 1, 1, 1)
    expected = (lam * (D - y) ** 2).mean()
    # float32 throughout; D - y loses ~1e-7 / c_out relative at the smallest sigma (~0.02): 1e-4.
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=0)
    unweighted = ((D - y) ** 2).mean()
    assert not torch.allclose(unweighted, expected, rtol=0.1), "the weighting must matter here"


def test_train_step_returns_the_loss_and_steps_with_the_scheduled_lr(randomise):
    # 64 images / batch 16 = 4 steps, half of them warm-up: the first step runs at lr / 2. The
    # noise distribution is not the default one, so the step must take it from the preset.
    p = tiny(lr=1e-3, lr_schedule="cosine", warmup_fraction=0.5, P_mean=-0.5, P_std=1.5)
    st = training.make_state(p, torch.device("cpu"))
    den = randomise(st.denoiser, std=0.2).train()               # in place: Adam holds these
    before = copy.deepcopy(den)
    step = training.TrainStep(st, p, amp=False)
    y = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * den.sigma_data
    labels = torch.arange(16) % 10
    expected = before.loss(y, labels, P_mean=p.train.P_mean, P_std=p.train.P_std,
                           generator=torch.Generator().manual_seed(5))
    loss = step(y, labels, generator=torch.Generator().manual_seed(5))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # Adam's first step moves every weight with a gradient by lr_t * g / (|g| + eps) = lr_t
    # (|g| >> eps = 1e-8), so the largest move is the scheduled learning rate itself.
    lr_0 = p.train.lr * training.lr_factor(p)(0)
    assert lr_0 == pytest.approx(5e-4)
    moves = [(a - b).detach().abs().max() for a, b in zip(den.parameters(), before.parameters())]
    assert float(max(moves)) == pytest.approx(lr_0, rel=1e-3)
    # every call advances the schedule by one optimizer step
    for k in (1, 2, 3):
        assert st.opt.param_groups[0]["lr"] == pytest.approx(p.train.lr * training.lr_factor(p)(k))
        step(y, labels, generator=torch.Generator().manual_seed(5 + k))


def test_a_compiled_step_trains_like_the_eager_one(randomise):
    """``compile=`` (pipeline's and train.py's ``--compile``) hands the loss to
    torch.compile: the same losses, gradients and BatchNorm statistics as eager, up to float
    reassociation. (Not the weights after Adam: a conv bias before a BatchNorm has a gradient that
    is zero but for rounding, which Adam scales to ~lr, so the two runs move it differently.)"""
    p = tiny()
    states = [training.make_state(p, torch.device("cpu")) for _ in range(2)]
    for st in states:
        randomise(st.denoiser, std=0.2).train()
    y = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 10
    losses, grads, buffers = [], [], []
    for st, compile in zip(states, (False, True)):
        step = training.TrainStep(st, p, amp=False, compile=compile)
        losses.append([float(step(y, labels, generator=torch.Generator().manual_seed(0)))])
        grads.append({k: q.grad.clone() for k, q in st.denoiser.named_parameters()})
        buffers.append({k: b.clone() for k, b in st.denoiser.named_buffers()})
        losses[-1] += [float(step(y, labels, generator=torch.Generator().manual_seed(k)))
                       for k in (1, 2)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    scale = max(float(g.abs().max()) for g in grads[0].values())   # ~1e-6 of it is rounding
    for (k, a), b in zip(grads[0].items(), grads[1].values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * scale, msg=f"gradient of {k}")
    for (k, a), b in zip(buffers[0].items(), buffers[1].values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=k)


# ---- checkpoints ------------------------------------------------------------------------------

# The messages the trainer gives (diffnb.training.checkpoints.check); each says what happened and what
# to do, and deletes nothing.
OTHER_CONFIG = (r"belongs to another configuration \(run key \w+, expected \w+ for tiny_base\)\. "
                r"Move it away or delete it; diffnb names run folders by run key, so it was "
                r"copied or renamed by hand\.")
OTHER_PROFILE = (r"was trained in the 'quick' profile but this run is 'full'\. Run with "
                 r"DIFFNB_PROFILE=quick to use it, or delete it to train again\.")


def test_checkpoint_of_another_configuration_says_what_to_do(tmp_checkpoints):
    p = tiny("base")
    training.train(p, device="cpu", progress=False)
    other = replace(p, train=replace(p.train, lr=5e-4))
    assert config.run_key(other) != config.run_key(p)
    folder = training.checkpoint_dir(other)
    folder.mkdir(parents=True)
    for name in ("last.pt", "e0001.pt"):        # as if copied into the wrong folder by hand
        shutil.copy(training.checkpoint_dir(p) / name, folder / name)
    with pytest.raises(training.CheckpointError, match=OTHER_CONFIG) as err:
        training.load_or_train(other, device="cpu", progress=False)        # finished run
    assert str(folder / "e0001.pt") in str(err.value)
    (folder / "e0001.pt").unlink()
    with pytest.raises(training.CheckpointError, match=OTHER_CONFIG) as err:
        training.train(other, device="cpu", progress=False)                # resume
    assert str(folder / "last.pt") in str(err.value)
    assert (folder / "last.pt").exists(), "nothing is deleted"


def test_checkpoint_of_another_profile_says_what_to_do(tmp_checkpoints, monkeypatch):
    p = tiny("base")                                        # scaled to quick
    monkeypatch.setenv("DIFFNB_PROFILE", "quick")
    training.train(p, device="cpu", progress=False)
    quick = training.checkpoint_dir(p)
    monkeypatch.setenv("DIFFNB_PROFILE", "full")
    p = replace(p, profile="full")                          # the same run, taken as full-size
    full = training.checkpoint_dir(p)
    assert quick.parent.name == "quick" and full.parent.name == "full"
    shutil.copytree(quick, full)                # quick checkpoints copied into the full tree
    with pytest.raises(training.CheckpointError, match=OTHER_PROFILE) as err:
        training.load_or_train(p, device="cpu", progress=False)
    assert str(full / "e0001.pt") in str(err.value)
    (full / "e0001.pt").unlink()
    with pytest.raises(training.CheckpointError, match=OTHER_PROFILE):
        training.train(p, device="cpu", progress=False)                    # resume
    assert (full / "last.pt").exists(), "nothing is deleted"


def test_checkpoint_saved_on_cuda_loads_on_the_cpu(tmp_checkpoints, monkeypatch):
    """A checkpoint written on a GPU machine records 'cuda:0' as its tensors' location. Simulated
    by re-saving a CPU checkpoint with torch's location tag forced to 'cuda:0': plain torch.load
    then fails on a CPU-only machine, diffnb's loader (map_location='cpu') does not."""
    import torch.serialization as ser

    p = tiny("class")
    trained = training.train(p, device="cpu", progress=False)
    final = training.checkpoint_dir(p) / "e0001.pt"
    blob = torch.load(final, map_location="cpu", weights_only=True)
    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        torch.save(blob, final)
    if not torch.cuda.is_available():           # the simulation is faithful: torch refuses it
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(final, weights_only=True)
    loaded = checkpoints.load(final)
    assert all(t.device.type == "cpu" for t in loaded["model"].values())
    again = training.load_or_train(p, device="cpu", progress=False)
    assert again.train_seconds == 0.0
    for k, v in trained.raw.state_dict().items():
        torch.testing.assert_close(again.raw.state_dict()[k], v, rtol=0, atol=0)


def test_a_resume_point_made_on_a_gpu_resumes_with_the_cpus_adam(tmp_checkpoints):
    """Adam's state dict carries ``fused`` (True on CUDA, where ``make_state`` asks for it); a
    resume point from the GPU must not bring it to a CPU run, nor a CPU one take it from CUDA."""
    p = tiny("class")
    st = training.make_state(p, torch.device("cpu"))
    blob = checkpoints.state_blob(st, p, profile=runtime.profile())
    for group in blob["optimizer"]["param_groups"]:
        group["fused"] = True                                 # as saved on the GPU
    again = training.make_state(p, torch.device("cpu"))
    checkpoints.restore(again, blob, preset=p, path=Path("gpu.pt"))
    assert [g["fused"] for g in again.opt.param_groups] == [False]


def test_two_writers_of_one_checkpoint_do_not_collide(tmp_checkpoints, monkeypatch):
    """Deterministic version of two runs saving at the same moment: while the first save is
    half-way (its temporary file written, not yet renamed), a second save of the same checkpoint,
    by another process (another os.getpid()), runs to the end. With one shared temporary name the
    first rename finds no file; with a temporary file per writer both land, and no temporary
    file is left."""
    real_save_checkpoint, real_torch_save, real_getpid = checkpoints.save, torch.save, os.getpid
    interleave = []

    def save_checkpoint(*args, **kwargs):
        if not interleave:
            interleave.append((args, kwargs))
        real_save_checkpoint(*args, **kwargs)

    def torch_save(obj, f, *args, **kwargs):
        real_torch_save(obj, f, *args, **kwargs)
        if interleave and interleave[0] is not None:
            (a, kw), interleave[0] = interleave[0], None
            with monkeypatch.context() as m:         # the other writer, start to finish
                m.setattr(os, "getpid", lambda: real_getpid() + 1)
                real_save_checkpoint(*a, **kw)

    p = tiny("base")
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "save", save_checkpoint)
        m.setattr(torch, "save", torch_save)
        training.train(p, device="cpu", progress=False)
    assert interleave == [None], "the interleaved save did not happen"
    assert not list(tmp_checkpoints.rglob("*.tmp*")), "a temporary file was left behind"
    assert training.load_or_train(p, device="cpu", progress=False).train_seconds == 0.0


# Many short epochs: each saves last.pt, so the two runs write the same file many times.
RUN = {"epochs": 8, "epoch_images": 16, "valid_images": 16}
WORKER = ("from dataclasses import replace\nfrom diffnb import config\n" + inspect.getsource(tiny)
          + f"RUN = {RUN!r}\n" + textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from diffnb import data, training
    torch.set_num_threads(1)
    data.train_valid_split(); data.sigma_data()          # load before the start signal
    real_save = torch.save

    def slow_save(*args, **kwargs):                      # a slow disk: a save takes 0.2 s, so
        real_save(*args, **kwargs)                       # the two runs' saves overlap in time
        time.sleep(0.2)
    torch.save = slow_save
    Path(sys.argv[1]).touch()                            # ready
    while not Path(sys.argv[2]).exists():                # start together
        time.sleep(0.01)
    t = training.load_or_train(tiny("base", **RUN), device="cpu", progress=False)
    print("finished", len(t.history["train_loss"]))
"""))


@pytest.mark.slow
def test_same_run_twice_at_once_is_harmless(tmp_checkpoints, tmp_path):
    """A notebook run twice at once: two processes train the same preset into the same
    checkpoint folder, started together, saving every epoch on a slow disk (each save's file is
    complete 0.2 s before it returns, so saves of the two runs overlap). Atomic writes with a
    temporary file per writer make that harmless: both finish, the checkpoints load, no temporary
    file remains."""
    env = {**os.environ, "DIFFNB_CHECKPOINTS": str(tmp_checkpoints), "DIFFNB_PROFILE": "quick",
           "DIFFNB_DEVICE": "cpu", "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"ready{i}"), str(go)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the workers did not get ready"
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().endswith(f"finished {RUN['epochs']}"), out
    assert not list(tmp_checkpoints.rglob("*.tmp*")), "a temporary file was left behind"
    p = tiny("base", **RUN)
    for path in training.checkpoint_dir(p).glob("*.pt"):
        assert checkpoints.load(path)["epoch"] >= 1
    assert training.load_or_train(p, device="cpu", progress=False).train_seconds == 0.0


def test_load_final_never_trains_and_best_final_picks_the_lowest_validation_loss(
        tmp_checkpoints, monkeypatch):
    a, b = tiny("base", seed=1), tiny("base", seed=2)
    monkeypatch.setitem(config.PRESETS, "t_a", replace(a, name="t_a", profile=None))
    monkeypatch.setitem(config.PRESETS, "t_b", replace(b, name="t_b", profile=None))
    quick = runtime.PROFILES["quick"]
    assert training.load_final("t_a", profile=quick, device="cpu") is None
    assert not tmp_checkpoints.exists(), "load_final trained or wrote something"
    assert training.best_final(["t_a", "t_b"], profile=quick, device="cpu") is None
    trained = {n: training.load_or_train(n, profile=quick, device="cpu", progress=False)
               for n in ("t_a", "t_b")}
    assert training.best_final(["t_a"], profile=quick, device="cpu").preset.name == "t_a"
    lowest = min(trained, key=lambda n: trained[n].history["valid_loss"][-1])
    picked = training.best_final(["t_a", "t_b"], profile=quick, device="cpu")
    assert (picked.preset.name, picked.profile) == (lowest, "quick")
    for k, v in trained[lowest].denoiser.state_dict().items():
        torch.testing.assert_close(picked.denoiser.state_dict()[k], v, rtol=0, atol=0)
    losses = {"t_a": 0.5, "t_b": 0.2}
    monkeypatch.setattr(checkpoints, "final_valid_loss", lambda p, profile: losses[p.name])
    monkeypatch.setattr(loop, "load_final", lambda name, **kw: SimpleNamespace(name=name))
    assert training.best_final(["t_a", "t_b"], profile=quick).name == "t_b"   # only it loaded
    losses["t_a"] = None                                                       # not finished
    assert training.best_final(["t_a", "t_b"], profile=quick) is None
