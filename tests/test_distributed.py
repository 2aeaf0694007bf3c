"""Several processes with torchrun (diffnb.training.distributed, ``python -m diffnb.training``), on the CPU with
gloo and 2 processes: they train the run one process trains at the same global batch (a GroupNorm
UNet), a killed 2-process run resumes, a run moves from 2 processes to 1, and bad input says what
to do. BatchNorm nets: SyncBatchNorm runs on CUDA only, so on the CPU they are checked for what
they do there (both processes agree; the run is not the one-process run).

Tolerance: the two processes see the same draws and average their gradients, so a run differs from
one process only by the order of floating-point sums (a batch's gradient summed as two halves, then
averaged). After 2-16 Adam steps at lr 2e-3 the weights agree to ``ATOL`` = 5e-5 (2.5% of one
step; measured: median 2e-9, largest 3.4e-6, where Adam divides a near-zero gradient by its own
size) plus ``RTOL`` = 1e-4, and Adam's moments to 1e-3 of their scale (summed instead of averaged
gradients would double them). A wrong shard, a rank on its own or other draws move the weights by
about the learning rate per step.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from diffnb import runtime, training
from diffnb.config import ModelConfig
from diffnb.models import resnet
from diffnb.training import __main__ as train_cli
from diffnb.training import checkpoints, distributed

ROOT = Path(__file__).resolve().parents[1]
PROFILE = runtime.PROFILES["tiny"]
ATOL, RTOL = 5e-5, 1e-4
# A small GroupNorm UNet with EMA, cosine schedule and label dropout: 2 steps of 16 per epoch.
EPOCHS, STOP = 8, 2
GN = ("unet", ["model.nb_channels=16", "model.num_blocks=1", "model.cond_channels=16",
               "model.channel_mult=(1, 2)", "train.batch_size=16", f"train.epochs={EPOCHS}",
               "train.epoch_images=32", "train.valid_images=16", "train.label_dropout=0.1"])
# The report's class-conditional ResNet (conditional BatchNorm), shrunk; 2 epochs of 2 steps.
BN = ("class_1", ["model.nb_channels=8", "model.num_blocks=1", "model.cond_channels=8",
                  "train.batch_size=16", "train.epochs=2", "train.epoch_images=32",
                  "train.valid_images=16", "train.ema_decay=0.99"])
ENV = {"DIFFNB_PROFILE": "tiny", "DIFFNB_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def preset(run):
    return train_cli.preset_from(run[0], profile=PROFILE, sets=run[1])


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            *args]


def env_for(ckpt: Path) -> dict:
    return {**os.environ, **ENV, "DIFFNB_CHECKPOINTS": str(ckpt), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def cli_args(run) -> list[str]:
    """fp32 (--no-amp) on every CPU: the runs are compared at fp32 tolerances."""
    return [run[0], "--profile", PROFILE.name, "--no-amp"] + [a for s in run[1]
                                                               for a in ("--set", s)]


def assert_same(got: dict, want: dict, *, exact: bool = False):
    """Model, EMA and Adam's moments of two full checkpoints (blobs)."""
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": RTOL, "atol": ATOL}
    for part in ("model", "ema"):
        assert (got[part] is None) == (want[part] is None), part
        for k, v in (want[part] or {}).items():
            torch.testing.assert_close(got[part][k], v, **tol, msg=lambda m, k=k, p=part: f"{p}.{k}: {m}")
    for k, state in want["optimizer"]["state"].items():     # Adam's moments, to 1e-3 of their scale
        for name in ("exp_avg", "exp_avg_sq"):
            scale = float(state[name].abs().max())
            torch.testing.assert_close(got["optimizer"]["state"][k][name], state[name],
                                       **(tol if exact else {"rtol": 1e-3, "atol": 1e-3 * scale}))
    assert got["epoch"] == want["epoch"]


def max_difference(a: dict, b: dict) -> float:
    return max(float((a["model"][k] - v).abs().max()) for k, v in b["model"].items()
               if v.is_floating_point())


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so
    killing its process group leaves them running)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_after_first_epoch(cmd, *, env: dict, folder: Path) -> list[int]:
    """Start ``cmd`` in a session of its own, wait for its first ``last.pt``, then SIGKILL the
    launcher and every process below it at once (as a machine that dies). No timing is assumed:
    the run has EPOCHS epochs, and the test checks that the kill came before the end."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victims = []
    try:
        deadline = time.monotonic() + 240
        while not (folder / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no epoch was saved in 4 minutes"
            time.sleep(0.02)
        victims = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)          # the launcher first: it cannot restart them
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    for pid in victims:                              # gone (or a zombie of init's, about to be)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and "\nState:\tZ" not in _status(pid):
            assert time.monotonic() < deadline, f"process {pid} survived SIGKILL"
            time.sleep(0.05)
    return [proc.returncode, *victims]


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "\nState:\tZ"


# The rerun: diffnb.training's main for each run, in one process group (joining a second one through
# torchrun's store hangs now and then); each process records the last full checkpoint it built
# (every process builds it, rank 0 writes it), so the two processes' weights can be compared.
WORKER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch
    from diffnb.training import checkpoints, distributed
    from diffnb.training import __main__ as cli
    out, runs = Path(sys.argv[1]), eval(sys.argv[2])
    built = []
    real = checkpoints.state_blob
    checkpoints.state_blob = lambda *a, **k: built.append(real(*a, **k)) or built[-1]
    distributed.init(torch.device("cpu"))
    destroy, distributed.destroy = distributed.destroy, lambda: None
    for tag, argv in runs:
        assert cli.main(argv) == 0
        torch.save(built[-1], out / f"{tag}-rank{os.environ['RANK']}.pt")
    destroy()
""")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """``torchrun --nproc_per_node=2 -m diffnb.training`` of the GroupNorm run killed after its first
    saved epoch (its folder kept as ``snapshot``), then the same command again (through WORKER,
    which calls diffnb.training's main), then the BatchNorm run, 2 processes each."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("finding torchrun's workers to kill them reads /proc (Linux)")
    tmp = tmp_path_factory.mktemp("two")
    env, ckpt = env_for(tmp / "checkpoints"), tmp / "checkpoints"
    folder = ckpt / PROFILE.name / training.checkpoint_dir(preset(GN), PROFILE).name
    killed = kill_after_first_epoch(torchrun("-m", "diffnb.training", *cli_args(GN)), env=env,
                                    folder=folder)
    shutil.copytree(folder, tmp / "snapshot")
    (tmp / "worker.py").write_text(WORKER)
    runs = [("gn", cli_args(GN)), ("bn", cli_args(BN))]
    rerun = subprocess.run(torchrun(str(tmp / "worker.py"), str(tmp), repr(runs)), cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    return {"killed": killed, "snapshot": tmp / "snapshot", "folder": folder, "rerun": rerun,
            "blobs": {f.stem: torch.load(f, weights_only=True) for f in tmp.glob("*-rank*.pt")}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Training in this process on one thread, as each torchrun process (conftest.one_thread)."""


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same runs, uninterrupted, in this process: the GroupNorm run's full checkpoint after
    every epoch (``gn[epoch]``) and the BatchNorm run's final one."""
    out = {"gn": {}}
    real = checkpoints.state_blob
    with pytest.MonkeyPatch.context() as m:
        for tag, run in (("gn", GN), ("bn", BN)):
            m.setenv("DIFFNB_CHECKPOINTS", str(tmp_path_factory.mktemp(tag)))
            built = []
            m.setattr(checkpoints, "state_blob",
                      lambda *a, built=built, **k: built.append(copy.deepcopy(real(*a, **k))) or built[-1])
            training.train(preset(run), profile=PROFILE, device="cpu", progress=False, amp=False)
            if tag == "gn":
                out["gn"] = {blob["epoch"]: blob for blob in built}
            else:
                out["bn"] = built[-1]
    assert sorted(out["gn"]) == list(range(1, EPOCHS + 1))
    return out


def killed_at(two_processes) -> int:
    return checkpoints.load(two_processes["snapshot"] / "last.pt")["epoch"]


# ---- two processes train the one-process run -------------------------------------------------

@pytest.mark.slow
def test_two_processes_train_the_one_process_run(two_processes, one_process):
    """GroupNorm UNet, global batch 16 (8 per process), EMA, label dropout, cosine LR: after the
    first epochs (2 steps each) the 2-process checkpoint is the one-process run's, both processes
    end with the same weights, and those are the one-process run's final ones."""
    first = checkpoints.load(two_processes["snapshot"] / "last.pt")      # uninterrupted so far
    assert_same(first, one_process["gn"][first["epoch"]])
    rank0, rank1 = two_processes["blobs"]["gn-rank0"], two_processes["blobs"]["gn-rank1"]
    assert_same(rank1, rank0, exact=True)
    want = one_process["gn"][EPOCHS]
    assert_same(rank0, want)
    assert_same(checkpoints.load(two_processes["folder"] / checkpoints.final_name(EPOCHS)), rank0,
                exact=True)                                             # rank 0 wrote what it held
    for key in ("train_loss", "valid_loss"):    # the history's losses are the global batch's
        assert rank0["history"][key] == pytest.approx(want["history"][key], rel=1e-5), key
    start = training.make_state(preset(GN), torch.device("cpu")).denoiser.state_dict()
    assert max(float((rank0["model"][k] - v).abs().max()) for k, v in start.items()) > 100 * ATOL, \
        "the weights did not move: equal weights would prove nothing"


@pytest.mark.slow
def test_batchnorm_net_on_two_cpu_processes(two_processes, one_process):
    """SyncBatchNorm runs on CUDA only (torch raises 'SyncBatchNorm expected input tensor to be on
    GPU'): on the CPU each process normalises its own 8 images, says so, and the processes still
    end with the same weights and statistics (rank 0's buffers are broadcast every epoch)."""
    rank0, rank1 = two_processes["blobs"]["bn-rank0"], two_processes["blobs"]["bn-rank1"]
    assert_same(rank1, rank0, exact=True)
    assert "SyncBatchNorm runs on CUDA only" in two_processes["rerun"].stderr
    assert max_difference(rank0, one_process["bn"]) > 100 * ATOL, \
        "BatchNorm over 8 images per process should differ from one process over 16"


def test_sync_batchnorm_keeps_the_weights_and_the_call():
    """resnet.sync_batchnorm (used on CUDA under torchrun): every BatchNorm2d becomes a SyncBatchNorm
    holding the same parameter and buffer objects (the optimizer's), the base model's norm still
    takes the embedding, and without a process group the output is unchanged."""
    torch.manual_seed(0)
    for arch in ("base", "class"):
        cfg = ModelConfig(arch=arch, nb_channels=8, num_blocks=2, cond_channels=8)
        net = resnet.ResNet(cfg).train()
        before = dict(net.named_parameters()) | dict(net.named_buffers())
        x, c = torch.randn(4, 1, 32, 32), torch.randn(4)
        labels = torch.arange(4) if arch == "class" else None
        ref = net(x, c, labels)
        assert resnet.sync_batchnorm(net) is net
        norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == 4 and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
        after = dict(net.named_parameters()) | dict(net.named_buffers())
        assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
        torch.testing.assert_close(net(x, c, labels), ref, rtol=0, atol=0)


# ---- resume: killed, and across numbers of processes ----------------------------------------

@pytest.mark.slow
def test_killed_two_process_run_resumes(two_processes, one_process):
    """``torchrun --nproc_per_node=2 -m diffnb.training`` killed (SIGKILL to the launcher and its
    workers) once its first epoch is saved, then run again: it resumes from an epoch strictly
    between 0 and the end and finishes with the uninterrupted run's weights."""
    launcher, *workers = two_processes["killed"]
    assert launcher == -signal.SIGKILL and len(workers) >= 2, two_processes["killed"]
    epoch = killed_at(two_processes)
    assert 0 < epoch < EPOCHS, f"the kill came after the end (epoch {epoch})"
    assert not (two_processes["snapshot"] / checkpoints.final_name(EPOCHS)).exists()
    out = two_processes["rerun"].stdout
    assert f"resumed from epoch {epoch}," in out and f"finished at epoch {EPOCHS} of {EPOCHS}" in out
    assert_same(checkpoints.load(two_processes["folder"] / checkpoints.final_name(EPOCHS)),
                one_process["gn"][EPOCHS])


@pytest.mark.slow
def test_two_process_run_resumes_in_one_process(two_processes, one_process, tmp_checkpoints):
    """The killed 2-process run's checkpoint finished by one process is the uninterrupted
    one-process run: a checkpoint holds nothing that depends on the number of processes."""
    folder = training.checkpoint_dir(preset(GN), PROFILE)
    shutil.copytree(two_processes["snapshot"], folder)
    t = training.train(preset(GN), profile=PROFILE, device="cpu", progress=False, amp=False)
    assert t.resumed_from == killed_at(two_processes) and t.finished
    assert_same(checkpoints.load(folder / checkpoints.final_name(EPOCHS)), one_process["gn"][EPOCHS])


# ---- bad input ----------------------------------------------------------------------------

TORCHRUN_3 = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "29999"}


def test_global_batch_must_split_evenly(monkeypatch, capsys, tmp_checkpoints):
    with pytest.raises(ValueError, match=r"the global batch of 16 images does not split evenly "
                                         r"over 3 processes: use a batch divisible by 3 \(e.g\. 15 "
                                         r"or 18"):
        distributed.check_batch(16, 3)
    assert distributed.check_batch(16, 2) == 8
    with pytest.raises(ValueError, match="does not split evenly"):
        distributed.shard(distributed.World(0, 0, 3), torch.zeros(16))
    for k, v in TORCHRUN_3.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(cli_args(GN))                # batch 16 over 3 processes
    assert exit_.value.code == 2
    assert "does not split evenly over 3 processes" in capsys.readouterr().err
    assert not dist.is_initialized(), "refused before joining a process group"
    assert not tmp_checkpoints.exists(), "nothing trained"


def test_shard_is_contiguous_and_keeps_none():
    y = torch.arange(8)
    assert [distributed.shard(distributed.World(r, r, 2), y, None)[0].tolist()
            for r in (0, 1)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert distributed.shard(distributed.World(1, 1, 2), y, None)[1] is None
    assert distributed.shard(distributed.World(), y)[0] is y


def test_half_set_torchrun_environment_says_what_to_do(monkeypatch, capsys):
    for k in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        train_cli.main(cli_args(GN))
    err = capsys.readouterr().err
    assert ("torchrun's environment is half set: RANK, WORLD_SIZE set but LOCAL_RANK, "
            "MASTER_ADDR, MASTER_PORT not.") in err
    assert "torchrun --standalone --nproc_per_node=N -m diffnb.training PRESET" in err
    with pytest.raises(ValueError, match="do not fit together"):
        distributed.from_env({**TORCHRUN_3, "RANK": "3"})
    assert distributed.from_env({}) == distributed.World()


def test_unknown_preset_and_bad_setting_say_what_to_do(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["clas_1", "--profile", "tiny"])
    assert "unknown preset 'clas_1'; known presets: base_1, base_2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["unet", "--profile", "tiny", "--set", "train.batch=8"])
    err = capsys.readouterr().err
    assert "--set 'train.batch=8': use model.FIELD=VALUE or train.FIELD=VALUE" in err
    assert "batch_size" in err and "nb_channels" not in err
    with pytest.raises(SystemExit):
        train_cli.main(["unet", "--profile", "tiny", "--set", "train.batch_size=big"])
    assert "train.batch_size takes int values (now 128), not 'big'" in capsys.readouterr().err
    p = train_cli.preset_from("unet", profile=PROFILE, sets=["model.channel_mult=(1, 2)",
                                                              "train.lr_schedule=constant"])
    assert p.model.channel_mult == (1, 2) and p.train.lr_schedule == "constant"


def test_device_under_torchrun_is_this_process_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert runtime.device() == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.device() == torch.device("cuda", 1)
    monkeypatch.setenv(runtime.DEVICE_ENV, "cuda")
    assert runtime.device() == torch.device("cuda", 1)
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.device() == torch.device("cpu")
    monkeypatch.delenv(runtime.DEVICE_ENV)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match=r"LOCAL_RANK='2' but this machine has 2 CUDA device"):
        runtime.device()


def test_command_line_prints_a_line_per_epoch(capsys, tmp_checkpoints):
    """A log file has no progress bar: the command line says each epoch's losses and speed."""
    assert train_cli.main(cli_args(BN)) == 0
    out = capsys.readouterr().out
    lines = [s for s in out.splitlines() if " epoch " in s and " of 2: " in s]
    assert [s.split(" epoch ")[1][:6] for s in lines] == ["1 of 2", "2 of 2"], out
    history = training.load_final(preset(BN), profile=PROFILE, device="cpu").history
    assert f"valid loss {history['valid_loss'][-1]:.4f}" in lines[-1]
    assert "img/s" in lines[-1] and "finished at epoch 2 of 2" in out
