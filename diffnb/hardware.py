"""The CPU a run is on: its feature flags, its model (as provenance), and whether bf16 is worth
using on it. Linux's ``/proc/cpuinfo``; elsewhere the flags are empty and the model is what
``platform`` says."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags:")
    return set(line.split(":", 1)[1].split())


@lru_cache(maxsize=1)
def cpu_bf16_fast() -> bool:
    """Whether bf16 beats fp32 on this CPU. With AMX (``amx_bf16``) it does (3.5-5.8x for a
    training step on a 2-core Xeon); without AVX-512 BF16 it is emulated and far slower (a class_1
    step 122 s against 13 s on an AVX2 EPYC). With AVX-512 BF16 alone it depends on the chip (a
    Xeon: 1.6x slower; a Zen 4 EPYC: 2.4x faster), so it is measured: a 3x3 convolution's forward
    and backward, as in training, timed in both, about a second once per process."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return True
    if "avx512_bf16" not in flags:
        return False
    return _bf16_speedup() > 1.2


def _bf16_speedup() -> float:
    import time

    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(32, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def best(amp: bool) -> float:
        times = []
        for _ in range(4):   # first asked inside sampling's no_grad: a training step needs grad
            t0 = time.perf_counter()
            with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                conv(x).float().sum().backward()
            times.append(time.perf_counter() - t0)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # per-core kernel speed: the other core may be busy
    try:
        return best(False) / best(True)
    finally:
        torch.set_num_threads(threads)


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU as provenance: its model name, its bf16 units and its cores, e.g. "AMD EPYC
    (family 25 model 17; AVX-512 BF16; 2 cores)"."""
    import platform

    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    units = "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags \
        else "no native bf16"
    family = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; "
    return (f"{fields.get('model name', 'unknown CPU')} ({family}{units}; "
            f"{os.cpu_count()} cores)")
