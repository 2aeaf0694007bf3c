"""Samplers as FID sources (slides 8-9): samples and their Inception features per stream, drawn
for many streams at once and cached on disk.

The protocols draw class c with seed ``seed + c``; a *stream* is one (class, seed) draw, and
sample i of it starts from its own seed (``sampling.sample_seeds``), so a smaller draw is a
prefix of a larger one. :class:`SampleSource` gives :func:`fid.evaluate` features, not only
images: all the streams a call needs are sampled in one sampler call (one for class labels, one
for no class) and go through Inception in one pass, in full batches instead of one class at a
time; the features are cached by :mod:`diffnb.fid.generated`, keyed by the weights' fingerprint,
the sampler and the devices, so scoring the same sampler again (another notebook, the ablation's
first row, the report protocol's class 0 in ``studies.class0_bug``) generates nothing. With a
``reader`` (the kept :mod:`~diffnb.evaluation.classifier`), the same images are also read by the
classifier, and its class probabilities are cached beside the features.

Batches are padded so that a sample's numbers never depend on the batch it was drawn in: on a
CPU ``sampling.sample`` pads every batch to a multiple of ``sampling.CPU_ROWS`` rows (on this
project's CPUs a batch of fewer rows, or a partial group of rows at the end of one, gave other
last bits: 3e-7 to 3e-5, up to 1e-2 with random-weight networks), and every Inception batch has
:data:`CPU_FEATURE_BATCH` images (with one thread its bits depended on the batch too); on a GPU
every sampler call here is padded to whole batches and every Inception batch is full, so kernels
chosen by shape are the same (not measured on a GPU). Without the padding the cache would make
a number depend on which call drew a sample first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffnb import runtime
from diffnb.diffusion import noise, sampling
from diffnb.evaluation import classifier, partial
from diffnb.fid import generated, network
from diffnb.training import checkpoints

CPU_MULTIPLE = sampling.CPU_ROWS  # sampler calls on a CPU: multiples of 8 rows (sampling.py)
# Inception batches on a CPU: always 8 images. With one thread, oneDNN gave an image other bits
# in a batch of 24 than in batches of 1-12 (4.8e-6; with two threads all batches agreed).
CPU_FEATURE_BATCH = 8


@dataclass(frozen=True)
class SamplerSpec:
    solver: str = "euler"
    steps: int | None = None      # None: the profile's (the report's 50 in the full profile)
    guidance: float = 1.0
    weights: str = "default"      # "default": EMA when trained with EMA; "raw": the raw weights

    def resolved(self, profile: runtime.Profile | None = None) -> "SamplerSpec":
        """Steps filled in from ``profile`` (default: the run's) when not given."""
        steps = self.steps or (profile or runtime.profile()).sampler_steps
        return SamplerSpec(self.solver, steps, self.guidance, self.weights)

    @property
    def label(self) -> str:
        s = self.resolved()
        text = f"{s.solver} {s.steps} steps (NFE {sampling.nfe(s.steps, s.solver)})"
        return text + (f", guidance {s.guidance:g}" if s.guidance != 1.0 else "")


def padded_count(n: int, *, multiple: int) -> int:
    """n rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def _device_text(dev: torch.device) -> str:
    """The device as far as it decides the numbers: the GPU's name, the CPU's vector unit."""
    if dev.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu {torch.backends.cpu.get_cpu_capability()}"
    return dev.type


def _pad(x: torch.Tensor, total: int) -> torch.Tensor:
    """x with its last row repeated up to ``total`` rows."""
    return torch.cat([x, x[-1:].expand(total - len(x), *x.shape[1:])]) if total > len(x) else x


class SampleSource:
    """``generate(labels, n, seed)`` for :func:`fid.evaluate`, and ``features(label, n, seed)``.

    Images and features are memoised by stream (class, seed); features also on disk unless
    ``cache=False``. ``generated`` counts the samples drawn (padding not counted), ``reused`` the
    feature rows read from the disk cache instead. ``plan(draws)`` names streams to draw together
    with the first request (``evaluation.score`` plans both protocols' draws).

    ``keep``: a folder (``results/<profile>/partial``): on a CPU, streams are drawn one sampler
    batch at a time, each batch kept there, so that a scoring cut at the deadline goes on, on any
    machine (:mod:`~diffnb.evaluation.partial`); ``resumed`` lists the samples read back from it
    by the machine that drew them. (On a GPU a scoring takes minutes: nothing is kept.)
    """

    def __init__(self, denoiser, spec: SamplerSpec, *, batch_size: int | None = None,
                 fingerprint: str | None = None, cache: bool = True, reader=None,
                 keep=None):
        self.denoiser, self.spec, self.batch_size = denoiser, spec.resolved(), batch_size
        self.fingerprint = fingerprint or checkpoints.fingerprint(denoiser)
        self.cache = cache
        self.reader = reader      # a classifier.Classifier: class probabilities beside features
        self._reader_tag = None if reader is None else checkpoints.fingerprint(reader)
        self._images: dict[tuple, torch.Tensor] = {}
        self._feats: dict[tuple, np.ndarray] = {}
        self._probs: dict[tuple, np.ndarray] = {}
        self._planned: list[tuple] = []
        self._read_back: set[tuple] = set()        # streams with rows drawn elsewhere
        self.generated = self.reused = 0
        self.resumed: dict[str, int] = {}          # samples read back, by the machine that drew them
        self.kept_streams: dict[tuple, int] = {}   # (label, seed): rows this source kept or read
        on_cpu = self._sampler_device().type == "cpu"
        self.store = partial.Store(keep, self._sample_key(), device=self._drawn_by()) \
            if keep is not None and on_cpu else None

    # ---- sampling: padded batches, one sampler call per kind of label ----------------------

    def _sampler_device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def _sampler_batches(self) -> tuple[int, int]:
        """(batch size, multiple every sampler call is padded to): 8 on a CPU (what
        ``sampling.sample`` pads each batch to anyway), the batch size on a GPU (every batch
        full)."""
        dev = self._sampler_device()
        bs = self.batch_size or sampling.default_batch_size(dev)
        return bs, CPU_MULTIPLE if dev.type == "cpu" else bs

    def _draw(self, streams: list[tuple[int | None, list[int]]]) -> list[torch.Tensor]:
        """Samples (unclamped) of each (label, seeds), in one sampler call per kind of label."""
        bs, multiple = self._sampler_batches()
        if bs % multiple:
            raise ValueError(f"batch_size {bs} must be a multiple of {CPU_MULTIPLE} on a CPU (a "
                             "sample in a partial group of rows gets other last bits)")
        out: list[torch.Tensor | None] = [None] * len(streams)
        for unconditional in (False, True):
            idx = [i for i, (label, _) in enumerate(streams) if (label is None) == unconditional]
            if not idx:
                continue
            seeds = [s for i in idx for s in streams[i][1]]
            total = padded_count(len(seeds), multiple=multiple)
            seeds += seeds[-1:] * (total - len(seeds))
            labels = None if unconditional else _pad(torch.tensor(
                [streams[i][0] for i in idx for _ in streams[i][1]]), total)
            x = sampling.sample(self.denoiser, seeds=seeds, labels=labels, steps=self.spec.steps,
                                solver=self.spec.solver, guidance=self.spec.guidance,
                                batch_size=bs)
            sizes = [len(streams[i][1]) for i in idx]
            for i, part in zip(idx, x.split([*sizes, total - sum(sizes)])):  # padding last
                out[i] = part
                self.generated += len(part)
        return out

    def _sample_key(self) -> dict:
        """What decides a sample apart from the machine (the partial store's key)."""
        s = self.spec
        return {"weights_fingerprint": self.fingerprint, "weights": s.weights,
                "sigma_data": float(self.denoiser.sigma_data), "solver": s.solver,
                "steps": s.steps, "guidance": float(s.guidance), "sigma_min": noise.SIGMA_MIN,
                "sigma_max": noise.SIGMA_MAX, "rho": noise.RHO, "torch": torch.__version__}

    def _drawn_by(self) -> str:
        """The CPU and precision of this source's draws (a store is kept on a CPU only)."""
        amp = runtime.default_amp(self._sampler_device())
        return f"{runtime.cpu_model()}, {'bf16' if amp else 'fp32'}"

    def _streams(self, streams: list[tuple[int | None, int, int, int]]) -> list[torch.Tensor]:
        """Rows start..n-1 of each stream (label, seed, start, n): in one sampler call per kind
        of label, or, with a partial store, stream by stream and batch by batch, kept as drawn."""
        if self.store is None:
            return self._draw([(label, sampling.sample_seeds(seed, n)[start:])
                               for label, seed, start, n in streams])
        bs, _ = self._sampler_batches()
        out = []
        for label, seed, start, n in streams:
            def sample(a: int, b: int, label=label, seed=seed) -> torch.Tensor:
                return self._draw([(label, sampling.sample_seeds(seed, b)[a:])])[0]

            rows, resumed = partial.draw(self.store, sample, label=label, seed=seed,
                                         start=start, n=n, batch=bs)
            for count, device in resumed:
                self.resumed[device] = self.resumed.get(device, 0) + count
            key = (label, seed)
            self.kept_streams[key] = max(n, self.kept_streams.get(key, 0))
            if resumed:
                self._read_back.add(key)
            out.append(rows)
        return out

    def __call__(self, labels: torch.Tensor | None, n: int, seed: int) -> torch.Tensor:
        label = None if labels is None else int(labels[0])
        if labels is not None and not bool((labels == label).all()):
            raise ValueError("the FID protocols draw one class at a time: pass labels of one "
                             "class, or None, and call once per class")
        key = (label, seed)
        have = self._images.get(key)
        if have is None or len(have) < n:
            start = 0 if have is None else len(have)
            new, = self._streams([(label, seed, start, n)])
            have = new if have is None else torch.cat([have, new])
            self._images[key] = have
        return have[:n].clamp(-1, 1)

    # ---- features: memoised, cached on disk, computed in one pass ---------------------------

    def sampler_key(self, *, batch_size: int | None = None, device=None) -> dict:
        """What decides a stream's features, besides its class and seed (the disk cache key);
        ``batch_size`` and ``device`` are Inception's."""
        dev = self._sampler_device()
        feat_dev = runtime.device(device)
        bs, multiple = self._sampler_batches()
        feat_bs = batch_size or network.default_batch_size(feat_dev)
        return {**self._sample_key(), "sampler_device": _device_text(dev),
                "amp": runtime.default_amp(dev),
                "sampler_batches": f"multiples of {multiple}" if dev.type == "cpu" else f"{bs}",
                "features_device": _device_text(feat_dev),
                "features_batches": f"{CPU_FEATURE_BATCH}" if feat_dev.type == "cpu" else
                f"{feat_bs}",
                "features_fn": f"{network.features.__module__}.{network.features.__qualname__}"}

    def plan(self, draws) -> None:
        """Streams (label, n, seed) to draw together with the next request."""
        self._planned += list(draws)

    def prefetch(self, draws, *, batch_size: int | None = None, device=None) -> None:
        """Features of every (label, n, seed) in ``draws`` (and the planned ones) into the memo,
        with the reader's class probabilities when there is one: from memory, else from the
        disk cache, else drawn all at once and stored."""
        want: dict[tuple, int] = {}
        for label, n, seed in [*self._planned, *draws]:
            key = (None if label is None else int(label), int(seed))
            want[key] = max(int(n), want.get(key, 0))
        self._planned = []
        sampler = self.sampler_key(batch_size=batch_size, device=device)
        stores = [(self._feats, sampler)]
        if self.reader is not None:
            stores.append((self._probs, {**sampler, "read_by": self._reader_tag}))
        todo = []
        for (label, seed), n in want.items():
            memo = self._memo_key(label, seed, sampler)
            known = [self._known(store, key, memo, label=label, seed=seed, n=n,
                                 count=store is self._feats) for store, key in stores]
            if min(known) < n:
                todo.append((label, seed, min(known), n, memo, known))
        if not todo:
            return
        images = torch.cat(self._streams([(label, seed, done, n)
                                          for label, seed, done, n, _, _ in todo])).clamp(-1, 1)
        parts = [self._features(images, batch_size=batch_size, device=device)]
        if self.reader is not None:
            parts.append(self._read(images))
        cuts = np.cumsum([n - done for _, _, done, n, _, _ in todo])[:-1]
        for s, ((store, key), values) in enumerate(zip(stores, parts)):
            for (label, seed, done, n, memo, known), part in zip(todo, np.split(values, cuts)):
                have = store.get(memo)   # a store keeps the rows it had (drawn again, they are
                if have is not None and len(have) >= n:   # the same up to last bits)
                    continue
                store[memo] = part if have is None else np.concatenate(
                    [have[:known[s]], part[known[s] - done:]])
                if self.cache and (label, seed) not in self._read_back:  # (this machine's only)
                    generated.save(key, label=label, seed=seed, feats=store[memo])

    def _known(self, store: dict, key: dict, memo: tuple, *, label, seed, n: int,
               count: bool) -> int:
        """How many of a stream's first n rows ``store`` holds, after reading the disk cache
        (``count``: rows read from disk count as reused)."""
        have = store.get(memo)
        done = 0 if have is None else len(have)
        if done >= n:
            return n
        disk = generated.load(key, label=label, seed=seed) if self.cache else None
        if disk is not None and len(disk) > done:
            store[memo] = disk[:n]
            self.reused += (len(store[memo]) - done) if count else 0
            done = len(store[memo])
        return done

    def _read(self, images: torch.Tensor) -> np.ndarray:
        """The reader's (N, 10) class probabilities, in batches of ``CPU_FEATURE_BATCH`` on a CPU
        (an image's numbers then do not depend on the batch it came in)."""
        n = len(images)
        padded = _pad(images.detach().float(), padded_count(n, multiple=CPU_FEATURE_BATCH))
        dev = next(self.reader.parameters()).device
        batch = CPU_FEATURE_BATCH if dev.type == "cpu" else 500
        return classifier.probabilities(self.reader, padded, batch=batch)[:n].numpy()

    @staticmethod
    def _features(images: torch.Tensor, *, batch_size: int | None, device) -> np.ndarray:
        """Inception features of model-space images, every batch a full one: on a CPU always
        ``CPU_FEATURE_BATCH`` images, on a GPU the batch size."""
        dev = runtime.device(device)
        n = len(images)
        bs = CPU_FEATURE_BATCH if dev.type == "cpu" else batch_size or \
            network.default_batch_size(dev)
        images = _pad(images, padded_count(n, multiple=bs))
        batch_size = bs
        return network.features(images.detach().float().cpu(), batch_size=batch_size,
                                device=device)[:n]

    def features(self, label: int | None, n: int, seed: int, *, batch_size: int | None = None,
                 device=None) -> np.ndarray:
        """(n, D) features of the first n samples of stream (label, seed)."""
        self.prefetch([(label, n, seed)], batch_size=batch_size, device=device)
        sampler = self.sampler_key(batch_size=batch_size, device=device)
        return self._feats[self._memo_key(label, seed, sampler)][:n]

    def classes(self, label: int | None, n: int, seed: int, **kw) -> np.ndarray:
        """(n,) the reader's classes of the first n samples of stream (label, seed)."""
        if self.reader is None:
            raise ValueError("this SampleSource has no reader: pass reader=classifier.load()")
        self.prefetch([(label, n, seed)], **kw)
        sampler = self.sampler_key(**kw)
        return self._probs[self._memo_key(label, seed, sampler)][:n].argmax(1)

    @staticmethod
    def _memo_key(label: int | None, seed: int, sampler: dict) -> tuple:
        return None if label is None else int(label), int(seed), tuple(sorted(sampler.items()))
