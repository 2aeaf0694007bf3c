"""Preconditioning, networks, training, checkpoints, samplers (slides 4-7)."""
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from diffnb import config, data, models, training
from diffnb.config import ModelConfig, Preset, TrainConfig
from diffnb.diffusion import noise, sampling
from diffnb.diffusion.precond import Denoiser, coefficients
from diffnb.models import conditioning
from diffnb.training import loop

SIGMA_DATA = 0.66


def tiny(arch="class", **train) -> Preset:
    model = ModelConfig(arch=arch, nb_channels=8, num_blocks=2, cond_channels=8)
    t = TrainConfig(epochs=2, batch_size=16, epoch_images=64, valid_images=32, **train)
    return Preset(name=f"tiny_{arch}", title="tiny", model=model, train=t, profile="quick")


def denoiser(arch) -> Denoiser:
    return Denoiser(models.build(tiny(arch).model), sigma_data=SIGMA_DATA).eval()


def test_coefficients_limits():
    sigma = torch.tensor([1e-6, 1.0, 1e4])
    c_skip, c_out, c_in, c_noise = coefficients(sigma, SIGMA_DATA)
    assert c_skip[0] == pytest.approx(1.0, abs=1e-9) and c_out[0] == pytest.approx(0.0, abs=1e-5)
    assert c_skip[2] == pytest.approx(0.0, abs=1e-6) and c_out[2] == pytest.approx(SIGMA_DATA, rel=1e-4)
    # unit variance of the network's input and of its training target (EDM sec. 5)
    assert float(c_in[1]) == pytest.approx(1 / (1 + SIGMA_DATA**2) ** 0.5)
    assert float(c_noise[1]) == 0.0


@pytest.mark.parametrize("arch", ["condbn", "class"])
def test_zero_init_denoiser_is_c_skip_x(arch):
    den = denoiser(arch)
    x = torch.randn(3, 1, 32, 32)
    sigma = torch.tensor([0.1, 1.0, 20.0])
    c_skip = coefficients(sigma, SIGMA_DATA)[0].view(-1, 1, 1, 1)
    torch.testing.assert_close(den(x, sigma), c_skip * x)


def test_base_model_is_not_zero_init_and_ignores_sigma():
    den = denoiser("base")
    x = torch.randn(2, 1, 32, 32)
    F1 = den.net(x, torch.tensor([0.0, 0.0]))
    F2 = den.net(x, torch.tensor([3.0, -2.0]))
    assert F1.abs().sum() > 0
    torch.testing.assert_close(F1, F2)  # no noise conditioning


@pytest.mark.parametrize("preset", list(config.REPORT_PRESETS), ids=lambda p: p.name)
@pytest.mark.parametrize("batch", [1, 3])
def test_report_networks_shapes(preset, batch):
    net = models.build(preset.model).eval()
    labels = torch.zeros(batch, dtype=torch.long) if preset.model.class_conditional else None
    out = net(torch.randn(batch, 1, 32, 32), torch.zeros(batch), labels)
    assert out.shape == (batch, 1, 32, 32)


def test_report_preset_sizes():
    p, p2 = config.get_preset("class_4"), config.get_preset("class_2")
    assert p.model == p2.model and p.train.epochs == 2 * p2.train.epochs  # class_2, twice as long
    C, B, E = 128, 8, 64  # slide 8: nb_channels, num_blocks, cond_channels; parameters by hand:
    conv = lambda c_in, c_out: 9 * c_in * c_out + c_out
    by_hand = conv(1, C) + B * (2 * conv(C, C) + 4 * (E * C + C)) + conv(C, 1) + (11 * E + E)
    assert models.count_parameters(models.build(p.model)) == by_hand  # 4 CondBN Linears a block
    assert all(q.train == TrainConfig(epochs=q.train.epochs) for q in config.REPORT_PRESETS)
    with pytest.raises(KeyError, match="known presets"):
        config.get_preset("class_5")


def test_quick_profile_changes_loop_sizes_only():
    from diffnb import runtime
    for p in config.REPORT_PRESETS:
        q = config.scaled(p, runtime.PROFILES["quick"])
        assert q.model == p.model
        assert replace(q.train, epochs=p.train.epochs, epoch_images=None, valid_images=None) == p.train
        assert q.train.epochs < p.train.epochs
    epochs = {n: config.scaled(config.get_preset(n)).train.epochs for n in ("class_1", "class_3")}
    assert epochs["class_3"] == 2 * epochs["class_1"]


def test_profile_batch_limits_scale_the_learning_rate_by_the_square_root_rule():
    """full raises batch 32 to 256 (lr x sqrt 8); quick lowers the UNets' 128 to 32 (lr x sqrt 1/4),
    so that a quick UNet run takes 4 steps: the zero-initialised label path gets gradients from
    the third on (with one step per epoch it never would)."""
    from diffnb import runtime
    from diffnb.training import datasets
    full, quick = runtime.PROFILES["full"], runtime.PROFILES["quick"]
    for name in ("class_2", "unet_attn_cfg"):
        p = config.get_preset(name)
        for profile in (full, quick):
            q = config.scaled(p, profile)
            limit = profile.train_batch or 0
            want = max(p.train.batch_size, limit)
            want = min(want, profile.max_train_batch or want)
            assert q.train.batch_size == want
            assert q.train.lr == pytest.approx(p.train.lr * (want / p.train.batch_size) ** 0.5)
    q = config.scaled(config.get_preset("unet_attn_cfg"), quick)
    assert q.train.epochs * datasets.steps_per_epoch(q) >= 4


def test_class_labels_include_zero_and_reject_out_of_range(randomise):
    den = randomise(denoiser("class"))  # not zero-initialised: F depends on the label
    x, sigma = torch.randn(1, 1, 32, 32), torch.tensor([1.0])
    d0, d_null = den(x, sigma, torch.tensor([0])), den(x, sigma, None)
    assert not torch.allclose(d0, d_null), "class 0 (T-shirt/top) must not be 'no class'"
    assert not torch.allclose(d0, den(x, sigma, torch.tensor([1])))
    for bad in (11, -1):
        with pytest.raises(ValueError, match="out of range"):
            den(x, sigma, torch.tensor([bad]))
    with pytest.raises(ValueError, match="not a class"):
        sampling.sample(den, seeds=[0], labels=[10], steps=2)
    with pytest.raises(ValueError, match="not class-conditional"):
        sampling.sample(denoiser("condbn"), seeds=[0], labels=[3], steps=2)


def test_tiny_overfit_loss_falls():
    torch.manual_seed(0)
    den = Denoiser(models.build(tiny("condbn").model), sigma_data=SIGMA_DATA).train()
    y = data.to_model_space(data.per_class(data.train_valid_split()[0], 7).images[:64])
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)

    def fixed_loss():
        return den.loss(y, generator=torch.Generator().manual_seed(1)).item()
    before = fixed_loss()
    for step in range(100):
        loss = den.loss(y, generator=torch.Generator().manual_seed(step))
        opt.zero_grad(); loss.backward(); opt.step()
    assert fixed_loss() < 0.6 * before


def _state(trained):
    return {k: v.clone() for k, v in trained.raw.state_dict().items()}


def test_checkpoint_round_trip_and_reuse(tmp_checkpoints):
    p = tiny("class", ema_decay=0.9)
    a = training.train(p, device="cpu", progress=False)
    assert len(a.history["train_loss"]) == 2 and len(a.history["valid_loss"]) == 2
    b = training.load_or_train(p, device="cpu", progress=False)
    assert b.train_seconds == 0.0, "a finished checkpoint must be reused, not retrained"
    for k, v in _state(a).items():
        torch.testing.assert_close(b.raw.state_dict()[k], v)
    assert b.denoiser is not b.raw  # EMA weights are what we sample with
    assert b.history == a.history


def test_resume_after_interruption_matches_uninterrupted(tmp_checkpoints, monkeypatch):
    p = tiny("condbn")
    full = _state(training.train(p, device="cpu", progress=False))
    for path in tmp_checkpoints.rglob("*.pt"):
        path.unlink()
    training.train(p, device="cpu", progress=False, stop_after=1)       # epoch 1 done
    calls = {"n": 0}
    real = training.train_epoch

    def crash_mid_epoch(*args, **kwargs):                              # epoch 2 dies
        calls["n"] += 1
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "train_epoch", crash_mid_epoch)  # train looks it up there
    with pytest.raises(KeyboardInterrupt):
        training.train(p, device="cpu", progress=False)
    monkeypatch.setattr(loop, "train_epoch", real)
    resumed = training.train(p, device="cpu", progress=False)
    assert resumed.resumed_from == 1 and calls["n"] == 1
    for k, v in full.items():
        torch.testing.assert_close(resumed.raw.state_dict()[k], v, rtol=0, atol=0)


def test_longer_constant_lr_run_resumes_from_shorter(tmp_checkpoints):
    p = tiny("base")
    training.train(p, device="cpu", progress=False)
    longer = replace(p, train=replace(p.train, epochs=3))
    assert config.run_key(longer) == config.run_key(p)
    t = training.load_or_train(longer, device="cpu", progress=False)
    assert t.resumed_from == 2 and len(t.history["train_loss"]) == 3
    cosine = replace(p, train=replace(p.train, lr_schedule="cosine", warmup_fraction=0.25))
    assert config.run_key(cosine) != config.run_key(replace(cosine, train=replace(cosine.train, epochs=3)))


def test_corrupt_checkpoint_is_a_clear_error(tmp_checkpoints):
    p = tiny("base")
    training.train(p, device="cpu", progress=False)
    final = training.checkpoint_dir(p) / "e0002.pt"
    final.write_bytes(final.read_bytes()[:1000])
    with pytest.raises(training.CheckpointError, match="corrupt or truncated.*Delete it"):
        training.load_or_train(p, device="cpu", progress=False)


def test_nan_loss_stops_with_clear_message(tmp_checkpoints):
    p = tiny("base", lr=1e30)
    with pytest.raises(training.NonFiniteLossError, match="Lower the learning rate"):
        training.train(p, device="cpu", progress=False, amp=False)


@pytest.mark.parametrize("solver,amp,guidance", [("euler", False, 1.0), ("heun", False, 2.0),
                                                  ("euler", True, 1.0)])
def test_samples_do_not_depend_on_batch_size_bitwise(solver, amp, guidance):
    """A seed fixes a sample whatever batch it is drawn in, to the last bit: on a CPU a batch of
    fewer than 8 rows is padded (oneDNN's fp32 kernels gave such batches other last bits)."""
    den = denoiser("class")
    for m in den.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
    seeds = sampling.sample_seeds(7, 10)
    labels = torch.tensor([0, 1, 2, 3, 9, 4, 5, 6, 7, 8])
    kw = dict(steps=4, solver=solver, amp=amp, guidance=guidance)
    a = sampling.sample(den, seeds=seeds, labels=labels, batch_size=10, **kw)
    assert torch.equal(a, sampling.sample(den, seeds=seeds, labels=labels, batch_size=2, **kw))
    traj = sampling.Trajectory()
    c = sampling.sample(den, seeds=seeds[1:3], labels=labels[1:3], batch_size=1, trajectory=traj, **kw)
    assert torch.equal(a[1:3], c)
    assert [len(x) for x in traj.x + traj.denoised] == [1] * 8    # the first batch, unpadded
    assert not torch.allclose(a[0], a[1])


def test_bf16_sampling_stays_within_half_a_grey_level_of_fp32():
    """bf16 autocast (the default on CUDA) runs the network in bf16 but keeps the ODE state x and
    D(x) in fp32 (precond.Denoiser promotes), so 18 Heun steps end within half a grey level (of
    255) of fp32 sampling: below the uint8 rounding every saved sample and FID image goes through.
    Here 0.12 at most; keeping x in bf16 between steps gave 3.0. On the quick profile's trained
    class_2 and unet_attn_cfg (64 samples, 50 steps, 2026-12-01) the largest difference was 0.08
    and 0.28 grey levels, Euler or Heun."""
    den = denoiser("class")
    torch.manual_seed(0)
    for m in den.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
    kw = dict(seeds=sampling.sample_seeds(3, 16), labels=torch.arange(16) % 10, steps=18,
              solver="heun")
    exact, bf16 = sampling.sample(den, amp=False, **kw), sampling.sample(den, amp=True, **kw)
    assert exact.std() > 0.3                                    # samples, not a constant
    assert ((exact - bf16).abs() * 127.5).max() < 0.5


class GaussianDenoiser(nn.Module):
    """The exact denoiser of y ~ N(mu, s^2) per pixel: E[y | x] = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)."""
    class_conditional = False

    def __init__(self, mu, s):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.mu, self.s = mu, s

    def forward(self, x, sigma, labels=None):
        s2 = sigma * sigma
        return (self.s**2 * x + s2 * self.mu) / (self.s**2 + s2)


def discrete_std(s, steps, solver):
    """Std that the discretised ODE gives on N(mu, s^2) data: x - mu obeys dx/dsigma = a x,
    a = sigma / (s^2 + sigma^2), stepped exactly as the solver does, from sigma_max."""
    sig = noise.karras_sigmas(steps).double().tolist()
    a = lambda z: z / (s * s + z * z)
    x = noise.SIGMA_MAX
    for s0, s1 in zip(sig[:-1], sig[1:]):
        x_next = x + a(s0) * x * (s1 - s0)
        if solver == "heun" and s1 > 0:
            x_next = x + (s1 - s0) * 0.5 * (a(s0) * x + a(s1) * x_next)
        x = x_next
    return x


@pytest.mark.parametrize("solver,steps,rel", [("euler", 50, 0.07), ("heun", 50, 0.01)])
def test_sampler_lands_on_gaussian_data(solver, steps, rel):
    mu, s = 0.3, 0.5
    x = sampling.sample(GaussianDenoiser(mu, s), seeds=list(range(64)), steps=steps,
                        solver=solver, amp=False)
    values = x.flatten()  # 64 * 1024 values, independent per pixel
    assert values.mean().item() == pytest.approx(mu, abs=0.01)
    assert values.std().item() == pytest.approx(s, rel=rel)
    # and exactly where the solver's discretisation error puts it
    assert values.std().item() == pytest.approx(discrete_std(s, steps, solver), rel=0.01)


def test_trajectory_capture():
    traj = sampling.Trajectory()
    sampling.sample(GaussianDenoiser(0.0, 1.0), seeds=[0, 1], steps=5, trajectory=traj, amp=False)
    assert len(traj.sigmas) == 5 and traj.sigmas[0] == pytest.approx(noise.SIGMA_MAX)
    assert traj.x[0].shape == traj.denoised[-1].shape == (2, 1, 32, 32)
    assert sampling.nfe(18, "heun") == 35 and sampling.nfe(50, "euler") == 50


# ---- the conditioning module: old checkpoints still load, labels are checked on the CPU ---------

OLD_COMMIT = "4e954d2"  # the last commit with the conditioning inside nets.py and unet.py


def _old_module(name: str, **namespace) -> types.ModuleType:
    """diffnb/<name>.py as of OLD_COMMIT, run as module old_<name> with ``namespace`` given."""
    root = Path(__file__).resolve().parent.parent
    try:
        src = subprocess.run(["git", "-C", str(root), "show", f"{OLD_COMMIT}:diffnb/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no git history with commit {OLD_COMMIT} here ({err})")
    mod = types.ModuleType(f"old_{name}")
    mod.__dict__.update(namespace)
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    try:
        exec(compile(src.replace("from diffnb import nets\n", ""), f"old_{name}.py", "exec"),
             mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
    return mod


def _old_networks():
    """nets.py and unet.py as of OLD_COMMIT (old unet imports old nets)."""
    old_nets = _old_module("nets")
    return old_nets, _old_module("unet", nets=old_nets)


def test_run_keys_are_those_before_the_new_model_options():
    """The new model options have defaults: the presets (and their checkpoints) keep their keys."""
    old = _old_module("config")
    assert set(old.PRESETS) <= set(config.PRESETS)
    for name in old.PRESETS:
        assert config.run_key(config.PRESETS[name]) == old.run_key(old.PRESETS[name]), name


# Run keys of the presets before TrainConfig.dataset (notebook 07): unscaled and full. The full
# run's committed weights (weights/full/) are found by these keys, so they must not move. (Quick
# keys move with the quick profile's sizes: nothing of a quick run is committed.)
RUN_KEYS = {
    "base_1": ("f302ddd40785", "066b14b6a90b"),
    "base_2": ("5341e129d84b", "883f37f4c2c3"),
    "condbn_1": ("5774add0ef42", "09d22c937077"),
    "condbn_2": ("9ae01e6c2c9f", "48b8dcfa7c2b"),
    "class_1": ("9b82eb888cad", "1bb510f2287f"),
    "class_2": ("30793be1ac24", "a99e80ec432a"),
    "class_3": ("9b82eb888cad", "1bb510f2287f"),
    "class_4": ("30793be1ac24", "a99e80ec432a"),
    "class_2_sched_ema": ("4eba47aa0176", "9d9f8a592c82"),
    "unet": ("33fd71a49c04", "51505a03ea1f"),
    "unet_attn": ("1d1ae00c3e07", "a1b8f6d55706"),
    "unet_attn_cfg": ("62edb95ae8ca", "5948cb774e5e"),
}


def test_the_dataset_field_keeps_every_existing_run_key():
    from diffnb import runtime

    for name, keys in RUN_KEYS.items():
        p = config.get_preset(name)
        assert p.train.dataset == "fashion_mnist"
        got = tuple(config.run_key(q) for q in (p, config.scaled(p, runtime.PROFILES["full"])))
        assert got == keys, name
    celeba = config.get_preset("celeba_unet")
    assert config.run_key(celeba) not in {k for keys in RUN_KEYS.values() for k in keys}
    as_fashion = replace(celeba, train=replace(celeba.train, dataset="fashion_mnist"))
    assert config.run_key(as_fashion) != config.run_key(celeba)   # the dataset is in the key


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point() and not name.endswith("noise_emb.w"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen) + ("running_var" in name))
    return net


# one preset per distinct network (class_3 is class_1's network trained longer, etc.), of the
# networks the old code had: Fashion-MNIST's (CelebA's 3x64x64 attribute nets came later)
FIRST_WITH_NETWORK: dict = {}
for _name, _preset in config.PRESETS.items():
    if _preset.train.dataset == "fashion_mnist":
        FIRST_WITH_NETWORK.setdefault(_preset.model, _name)


@pytest.mark.parametrize("name", list(FIRST_WITH_NETWORK.values()), ids=str)
def test_state_dicts_and_outputs_match_the_code_before_the_conditioning_module(name):
    old_nets, old_unet = _old_networks()
    cfg = config.get_preset(name).model
    old_cls = old_unet.UNet if cfg.arch == "unet" else old_nets.ResNet
    torch.manual_seed(3)
    old = old_cls(cfg)
    torch.manual_seed(3)
    new = models.build(cfg)
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert list(old_sd) == list(new_sd)
    for k, v in old_sd.items():  # same seed, same initial weights
        torch.testing.assert_close(new_sd[k], v, rtol=0, atol=0, msg=k)
    new.load_state_dict(_randomise(old, 5).state_dict())  # an old checkpoint loads
    x, c_noise = torch.randn(2, 1, 32, 32), torch.tensor([-1.0, 0.5])
    labels = torch.tensor([0, data.NULL_CLASS]) if cfg.class_conditional else None
    for mode in (True, False):  # batch statistics, then running statistics
        old.train(mode), new.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(new(x, c_noise, labels), old(x, c_noise, labels),
                                       rtol=0, atol=0)


def test_labels_are_checked_on_the_cpu_only():
    """``bad.any()`` on a device tensor would wait for the device: device labels pass unchecked
    (the meta device stands for CUDA here), CPU labels and sampling's labels are checked."""
    meta = data.check_labels(torch.tensor([11], device="meta"), 1, device="meta")
    assert meta.device.type == "meta"
    with pytest.raises(ValueError, match="out of range"):
        data.check_labels(torch.tensor([11]), 1, device="meta")
    with pytest.raises(ValueError, match="whole numbers"):
        data.check_labels([0.5], 1, device="cpu")
    with pytest.raises(ValueError, match="3 labels for a batch of 2"):
        data.check_labels([1, 2, 3], 2, device="cpu")
    torch.testing.assert_close(data.check_labels([4], 3, device="cpu"), torch.tensor([4, 4, 4]))


def test_attribute_labels_null_rows_and_range():
    check = lambda labels, **kw: data.check_labels(labels, 2, device="cpu",
                                                           num_attributes=3, **kw)
    assert check(None).tolist() == [[-1] * 3] * 2
    assert check([[1, 0, 1]]).tolist() == [[1, 0, 1]] * 2
    null = data.null_like(check([[1, 0, 1], [0, 0, 0]]))
    assert null.tolist() == [[data.NULL_ATTRIBUTE] * 3] * 2
    for bad in ([[1, 0, 2], [0, 0, 0]], [[1, -1, 0], [0, 0, 0]]):
        with pytest.raises(ValueError, match="out of range"):
            check(bad)
    with pytest.raises(ValueError, match="is not a condition"):
        check([[-1, -1, -1], [0, 1, 0]], allow_null=False)
    emb = conditioning.ClassEmbedding(4, num_attributes=3)
    nn.init.normal_(emb.linear.weight)
    out = emb(check([[0, 0, 0], [-1, -1, -1]]))
    assert not torch.allclose(out[0], out[1]), "all-zero attributes must not be 'no condition'"


def test_cond_norm_wraps_a_norm_without_affine_parameters():
    norm = conditioning.CondNorm2d(nn.GroupNorm(2, 8, affine=False), 6)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    torch.testing.assert_close(norm(x, emb), nn.functional.group_norm(x, 2))  # gamma 1, beta 0
    assert conditioning.CondNorm2d(nn.BatchNorm2d(8, affine=False), 6).gamma.out_features == 8
    with pytest.raises(ValueError, match="without affine"):
        conditioning.CondNorm2d(nn.BatchNorm2d(8), 6)


def test_sampling_builds_no_autograd_graph():
    """Sampling is inference: no graph is kept alive through the solver's steps (memory)."""
    den = denoiser("class")
    for p in den.parameters():
        p.requires_grad_(True)
    x = sampling.sample(den, seeds=[0, 1], labels=3, steps=3, amp=False)
    assert not x.requires_grad and x.grad_fn is None
