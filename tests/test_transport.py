"""Carrying files to the GPU machine in chunks (diffnb.carry), and packing its outputs back
(diffnb.transport)."""
import json
import os
from pathlib import Path

import pytest

from diffnb import carry, runtime, transport
from diffnb.carry import MIB, TransportError


def _files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(3 * MIB + 123)
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_text("hello")
    return {"data/big.bin": src / "big.bin", ".cache/x/small.txt": src / "small.txt"}, big


def test_deal_fits_budget_and_receive_reassembles_in_any_order(tmp_path):
    files, big = _files(tmp_path)
    folders = carry.deal(files, tmp_path / "there" / ".gpu", budget=MIB + 10, chunk=MIB)
    assert len(folders) >= 3
    for f in folders:
        assert sum(p.stat().st_size for p in f.iterdir() if p.name != "manifest.json") <= MIB + 10
    root = tmp_path / "there"
    # first command: only carry1 arrived -> the big file waits, naming the folder it needs
    later = [f.rename(f.with_name("_" + f.name)) for f in folders[1:]]
    r = carry.receive(root)
    assert any("big.bin: waits for carry2" in w for w in r["waiting"])
    assert not (root / "data/big.bin").exists()
    for f in later:
        f.rename(f.with_name(f.name[1:]))
    r = carry.receive(root)
    assert (root / "data/big.bin").read_bytes() == big
    assert (root / ".cache/x/small.txt").read_text() == "hello"
    assert r["waiting"] == []


def test_receive_refuses_a_corrupt_chunk_by_name(tmp_path):
    files, _ = _files(tmp_path)
    folders = carry.deal(files, tmp_path / "there" / ".gpu", budget=4 * MIB, chunk=MIB)
    chunk = sorted(folders[0].glob("000-001.bin"))[0]
    chunk.write_bytes(b"x" + chunk.read_bytes()[1:])
    with pytest.raises(TransportError, match="chunk carry1/000-001.bin of data/big.bin is corrupt"):
        carry.receive(tmp_path / "there")


@pytest.fixture
def outputs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path / "out"))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(tmp_path / "out" / "checkpoints"))
    return tmp_path / "out"


def _make_outputs(root):
    tiny = runtime.PROFILES["tiny"]
    res = runtime.output_dir("results", tiny)
    (res / "fid").mkdir(parents=True, exist_ok=True)
    (res / "fid" / "a.json").write_text('{"fid": 1.5}')
    (runtime.output_dir("figures", tiny) / "s03_x.png").write_bytes(os.urandom(20 * MIB))
    half = root / "checkpoints" / "tiny" / "class-abc" / "e0002.half.pt"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"weights")
    (half.parent / "last.pt").write_bytes(b"unfinished, not packed")
    (runtime.stamps_dir() / "tiny_a.json").write_text("{}")
    # executed notebooks: in place over one that held no full run, else under build/ (execute.py)
    for rel, saved in (("notebooks/01_a.ipynb", "tiny"), ("notebooks/02_b.ipynb", "full"),
                       ("build/notebooks/tiny/02_b.ipynb", "tiny")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps({"metadata": {"diffnb": {"profile": saved}}}))
    return tiny


def test_pack_unpack_round_trip_into_a_cold_checkout(outputs_root, tmp_path):
    tiny = _make_outputs(outputs_root)
    parts = transport.pack(outputs_root, tmp_path / "OUT", profile=tiny)
    assert len(parts) <= 8 and all(p.stat().st_size <= 16 * MIB for p in parts)
    names = json.loads((tmp_path / "OUT" / "pack.json").read_text())["files"]
    assert "checkpoints/tiny/class-abc/e0002.half.pt" in names
    assert not any(n.endswith("last.pt") for n in names)
    assert {n for n in names if n.endswith(".ipynb")} == {"notebooks/01_a.ipynb",
                                                           "build/notebooks/tiny/02_b.ipynb"}
    before = {p.relative_to(outputs_root): p.read_bytes() for p in outputs_root.rglob("*")
              if p.is_file() and p.name != "last.pt" and p.name != "02_b.ipynb"}
    before[Path("build/notebooks/tiny/02_b.ipynb")] = \
        (outputs_root / "build/notebooks/tiny/02_b.ipynb").read_bytes()
    import shutil
    shutil.rmtree(outputs_root)                              # the machine went cold
    r = transport.unpack(tmp_path / "OUT", outputs_root)
    assert r["kept"] == []
    for rel, data in before.items():
        assert (outputs_root / rel).read_bytes() == data
    assert (runtime.stamps_dir() / "tiny_a.json").exists()


def test_unpack_refuses_bad_or_missing_parts_and_keeps_newer_local_files(outputs_root, tmp_path):
    tiny = _make_outputs(outputs_root)
    transport.pack(outputs_root, tmp_path / "OUT", profile=tiny)
    part1 = tmp_path / "OUT" / "pack.part1"
    good = part1.read_bytes()
    part1.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(TransportError, match="part pack.part1 is corrupt"):
        transport.unpack(tmp_path / "OUT", outputs_root)
    part1.unlink()
    with pytest.raises(TransportError, match="part pack.part1 is missing"):
        transport.unpack(tmp_path / "OUT", outputs_root)
    part1.write_bytes(good)
    local = runtime.output_dir("results", tiny) / "fid" / "a.json"
    local.write_text('{"fid": 2.0, "newer": true}')          # edited here after the pack
    r = transport.unpack(tmp_path / "OUT", outputs_root)
    assert "results/tiny/fid/a.json" in r["kept"] and "newer" in local.read_text()
    transport.unpack(tmp_path / "OUT", outputs_root, force=True)
    assert local.read_text() == '{"fid": 1.5}'


def test_wheels_are_installed_only_once_all_have_arrived(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("subprocess.run", lambda cmd, check: calls.append(cmd))
    wheels = tmp_path / ".gpu" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"zip")
    site = tmp_path / ".gpu" / "site"
    said = carry.install_wheels(tmp_path, site, waiting=[".gpu/wheels/b-1.0-py3-none-any.whl: "
                                                          "waits for carry2"])
    assert "waiting" in said and calls == []
    carry.install_wheels(tmp_path, site, waiting=[])
    carry.install_wheels(tmp_path, site, waiting=[])       # the same set: not again
    assert len(calls) == 1 and "--target" in calls[0] and str(site) in calls[0]


def _checkpoint(path, epoch):
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "model": {}, "epoch": epoch, "pad": os.urandom(4000)}, path)


def test_pack_brings_back_what_an_unfinished_run_resumes_from(outputs_root, tmp_path,
                                                               small_group):
    from diffnb import checkpoints, config
    small_group()                      # one planned run: t_short (2 epochs) -> t_long (4)
    tiny = runtime.PROFILES["tiny"]
    folder = checkpoints.run_dir(config.scaled(config.get_preset("t_long"), tiny), tiny)
    _checkpoint(folder / "e0002.pt", 2)
    _checkpoint(folder / "last.pt", 3)
    (folder / "e0002.half.pt").write_bytes(b"t_short's weights")
    rel = f"checkpoints/tiny/{folder.name}"

    def packed(**kw):
        transport.pack(outputs_root, tmp_path / "OUT", profile=tiny, **kw)
        return set(json.loads((tmp_path / "OUT" / "pack.json").read_text())["files"])
    assert {f"{rel}/last.pt", f"{rel}/e0002.half.pt"} <= packed()
    assert f"{rel}/e0002.pt" not in packed()              # last.pt is further: that one
    (folder / "last.pt").unlink()
    assert f"{rel}/e0002.pt" in packed()                  # the continuation's start
    since = (folder / "e0002.pt").stat().st_mtime
    (runtime.output_dir("results", tiny) / "new.json").write_text("{}")
    os.utime(runtime.output_dir("results", tiny) / "new.json", (since + 5, since + 5))
    assert packed(since=since + 1) == {"results/tiny/new.json"}   # what this command wrote
    (folder / "e0004.half.pt").write_bytes(b"t_long's weights")     # the run is finished
    assert not any(n.endswith(".pt") and "half" not in n for n in packed())


def test_a_resume_point_too_big_for_the_pack_is_left_out_with_a_warning(
        outputs_root, tmp_path, small_group, monkeypatch, capsys):
    from diffnb import checkpoints, config
    small_group()
    tiny = runtime.PROFILES["tiny"]
    folder = checkpoints.run_dir(config.scaled(config.get_preset("t_long"), tiny), tiny)
    _checkpoint(folder / "last.pt", 1)
    (folder / "e0002.half.pt").write_bytes(os.urandom(1500))
    monkeypatch.setattr(transport, "PART_LIMIT", 1000)
    monkeypatch.setattr(transport, "MAX_PARTS", 3)
    parts = transport.pack(outputs_root, tmp_path / "OUT", profile=tiny)
    names = json.loads((tmp_path / "OUT" / "pack.json").read_text())["files"]
    assert len(parts) <= 4 and not any(n.endswith("last.pt") for n in names)
    assert any(n.endswith("e0002.half.pt") for n in names)          # the finished weights come
    assert "left out checkpoints/tiny/" in capsys.readouterr().err


def test_receive_keeps_the_machines_own_checkpoints_and_says_what_is_in_transit(tmp_path):
    from diffnb import carry
    src = tmp_path / "src"
    src.mkdir()
    (src / "old_last.pt").write_bytes(b"epoch 3")
    (src / "data.gz").write_bytes(os.urandom(3 * MIB))
    files = {"checkpoints/full/run/last.pt": src / "old_last.pt",
             ".gpu/data/train.gz": src / "data.gz"}
    there = tmp_path / "there"
    folders = carry.deal(files, there / ".gpu", budget=MIB + 10, chunk=MIB)
    (there / "checkpoints/full/run").mkdir(parents=True)
    (there / "checkpoints/full/run/last.pt").write_bytes(b"epoch 5: the machine's own")
    later = [f.rename(f.with_name("_" + f.name)) for f in folders[1:]]
    r = carry.receive(there)
    assert r["kept"] == ["checkpoints/full/run/last.pt"]
    assert (there / "checkpoints/full/run/last.pt").read_bytes().startswith(b"epoch 5")
    assert carry.in_transit(there) == {".gpu/data/train.gz"}
    for f in later:
        f.rename(f.with_name(f.name[1:]))
    carry.receive(there)
    assert carry.in_transit(there) == set()
