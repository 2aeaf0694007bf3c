"""The cache of generated-image features (diffnb.fid.generated) and the batched FID source
(diffnb.evaluation.sources): nothing is generated twice, and no number depends on how it was computed.

Inception is replaced by a cheap per-image stand-in (4x4 average pooling: each image's features
are computed on their own, so they cannot depend on the batch); the samples are real, from a
tiny random class-conditional model.
"""
import inspect
import json
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffnb import config, data, evaluation, fid, runtime
from diffnb.diffusion import sampling
from diffnb.evaluation import sources, studies
from diffnb.fid import generated, network, reference

pytestmark = pytest.mark.filterwarnings("ignore::diffnb.fid.SmallSampleWarning")

SPEC = evaluation.SamplerSpec(steps=2)


@pytest.fixture
def cache(scoring_outputs, monkeypatch):
    """Caches and results in tmp_path, the stand-in for Inception (conftest.pooled_features),
    and a log of sampler calls."""
    calls, sample = [], sampling.sample

    def logged(den, *, seeds, labels=None, **kw):
        kinds = None if labels is None else sorted(set(torch.as_tensor(labels).reshape(-1).tolist()))
        calls.append((kinds, len(seeds)))
        return sample(den, seeds=seeds, labels=labels, **kw)

    monkeypatch.setattr(sampling, "sample", logged)
    return SimpleNamespace(path=scoring_outputs, calls=calls)


@pytest.fixture
def trained(random_class_model):
    preset = config.scaled(config.get_preset("class_2"))
    return SimpleNamespace(preset=preset, raw=random_class_model, denoiser=random_class_model,
                           history={"epoch_seconds": [1.0]})


class PerClassSource:
    """``evaluation.SampleSource`` as it was before the feature cache (commit 7da5c57): one class
    at a time, images only; ``fid.evaluate`` computes their features per class."""

    def __init__(self, denoiser, spec):
        self.denoiser, self.spec = denoiser, spec.resolved()
        self._memo = {}

    def __call__(self, labels, n, seed):
        label = None if labels is None else int(labels[0])
        key = (label, seed)
        have = self._memo.get(key)
        if have is None or len(have) < n:
            start = 0 if have is None else len(have)
            seeds = sampling.sample_seeds(seed, n)[start:]
            new = sampling.sample(self.denoiser, seeds=seeds, labels=label, steps=self.spec.steps,
                                  solver=self.spec.solver, guidance=self.spec.guidance)
            have = new if have is None else torch.cat([have, new])
            self._memo[key] = have
        return have[:n].clamp(-1, 1)


def _numbers(result):
    return {pr: result[pr] for pr in fid.PROTOCOLS if pr in result}


def test_second_scoring_generates_nothing_and_gives_the_same_numbers(cache, trained):
    p = runtime.profile()
    first = evaluation.score(trained, spec=SPEC, reuse=False)
    n = 10 * max(p.fid_report_per_class, p.fid_standard_per_class,
                 -(-p.fid_standard_n // 10))
    assert (first["generated_images"], first["reused_images"]) == (n, 0)
    assert len(cache.calls) == 1        # every class of both protocols in one sampler call
    second = evaluation.score(trained, spec=SPEC, reuse=False)  # a new source: empty memo
    assert (second["generated_images"], second["reused_images"]) == (0, n)
    assert len(cache.calls) == 1
    assert _numbers(second) == _numbers(first)


def test_batched_cached_path_equals_the_per_class_path_bitwise(cache, trained):
    """The old path: one class at a time, features per protocol and class; the new: all classes
    in one sampler call and one feature pass, then from the cache. The same numbers, exactly."""
    p = runtime.profile()
    sizes = evaluation.scoring._protocol_sizes(p)
    old_gen = PerClassSource(trained.denoiser, SPEC)
    old = {pr: fid.evaluate(old_gen, protocol=pr, seed=0, class_conditional=True, warn=False,
                            **sizes[pr]) for pr in fid.PROTOCOLS}
    assert len(cache.calls) == 10
    for _ in range(2):  # drawn, then read from the cache
        new = evaluation.score(trained, spec=SPEC, reuse=False)
        assert _numbers(new) == old


def test_a_longer_draw_extends_the_cached_prefix_exactly(cache, random_class_model):
    short = sources.SampleSource(random_class_model, SPEC)
    a = short.features(3, 3, 7)
    longer = sources.SampleSource(random_class_model, SPEC)
    b = longer.features(3, 7, 7)
    assert (longer.generated, longer.reused) == (4, 3)     # only samples 3..6 drawn
    fresh = sources.SampleSource(random_class_model, SPEC, cache=False)
    c = fresh.features(3, 7, 7)
    assert fresh.generated == 7
    assert np.array_equal(b, c) and np.array_equal(b[:3], a)
    again = sources.SampleSource(random_class_model, SPEC)
    assert np.array_equal(again.features(3, 5, 7), c[:5])
    assert (again.generated, again.reused) == (0, 5)


def test_a_sample_does_not_depend_on_the_draw_it_is_in(cache, random_class_model):
    """Padded batches: a stream drawn alone, after another stream (at an odd offset) or as a
    prefix gives the same bits (without the padding this CPU's partial row groups differ)."""
    src = sources.SampleSource(random_class_model, SPEC)
    seeds = sampling.sample_seeds(7, 13)
    alone, = src._draw([(3, seeds[:3])])
    _, after, _ = src._draw([(5, sampling.sample_seeds(2, 6)), (3, seeds[:3]), (1, [4])])
    prefix, = src._draw([(3, seeds)])
    assert torch.equal(alone, after) and torch.equal(alone, prefix[:3])
    assert src.generated == 3 + 10 + 13                       # padding is not counted
    assert [n for _, n in cache.calls] == [8, 16, 16]         # multiples of CPU_MULTIPLE


def test_truncated_or_foreign_cache_file_is_recomputed(cache, random_class_model):
    src = sources.SampleSource(random_class_model, SPEC)
    ref = src.features(2, 6, 2)
    path = generated.stream_path(src.sampler_key(), label=2, seed=2)
    blob = path.read_bytes()
    for cut in (len(blob) - 8, len(blob) // 2, 100, 0):     # writes cut short
        path.write_bytes(blob[:cut])
        again = sources.SampleSource(random_class_model, SPEC)
        assert np.array_equal(again.features(2, 6, 2), ref)
        assert (again.generated, again.reused) == (6, 0)
        assert np.array_equal(generated.load(src.sampler_key(), label=2, seed=2), ref)
    other = {**src.sampler_key(), "steps": 3}                  # another key under this name
    generated.save(other, label=2, seed=2, feats=ref)
    generated.stream_path(other, label=2, seed=2).replace(path)
    again = sources.SampleSource(random_class_model, SPEC)
    again.features(2, 6, 2)
    assert (again.generated, again.reused) == (6, 0)


def test_key_tells_samplers_classes_and_seeds_apart(cache, random_class_model):
    key = sources.SampleSource(random_class_model, SPEC).sampler_key()
    paths = {generated.stream_path(k, label=label, seed=seed)
             for k in (key, {**key, "guidance": 1.5}, {**key, "solver": "heun"},
                       {**key, "weights_fingerprint": "0" * 16}, {**key, "features_device": "x"},
                       {**key, "sampler_batches": "2048"})
             for label in (None, 0, 1) for seed in (0, 1)}
    assert len(paths) == 6 * 3 * 2
    raw = sources.SampleSource(random_class_model, evaluation.SamplerSpec(steps=2, weights="raw"))
    assert raw.sampler_key()["weights"] == "raw" and key["weights"] == "default"
    assert key["steps"] == 2 and key["sigma_data"] == 0.66
    assert generated.stream_key(key, label=0, seed=0)["features_tag"] == reference.features_tag()


def test_a_shorter_prefix_never_replaces_a_longer_one_and_writers_do_not_collide(cache):
    key = {"sampler": "k"}
    feats = np.arange(40, dtype=np.float32).reshape(10, 4)
    generated.save(key, label=1, seed=1, feats=feats)
    generated.save(key, label=1, seed=1, feats=feats[:4])
    assert np.array_equal(generated.load(key, label=1, seed=1), feats)
    path = generated.stream_path(key, label=None, seed=5)
    errors = []

    def write():  # many writers of one stream at once, each an atomic rename of a whole file
        try:
            for _ in range(20):
                path.unlink(missing_ok=True)
                generated.save(key, label=None, seed=5, feats=feats)
        except Exception as err:  # pragma: no cover - the failure is reported below
            errors.append(err)
    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and np.array_equal(generated.load(key, label=None, seed=5), feats)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_draws_are_the_calls_evaluate_makes(cache):
    seen = []

    def generate(labels, n, seed):
        seen.append((None if labels is None else int(labels[0]), n, seed))
        return torch.zeros(n, 1, 32, 32) + 0.01 * torch.randn(n, 1, 32, 32)

    cases = [("report", dict(n=3), True), ("report", dict(n=3), False),
             ("standard", dict(n=25, n_per_class=4, test_n=40), True),
             ("standard", dict(n=25, test_n=40), False)]
    for protocol, sizes, cc in cases:
        seen.clear()
        fid.evaluate(generate, protocol=protocol, seed=5, class_conditional=cc, warn=False, **sizes)
        assert seen == fid.draws(protocol, seed=5, class_conditional=cc, **sizes), protocol


def test_class0_bug_reuses_the_report_protocols_class_0(cache, trained):
    p = runtime.profile()
    n = p.fid_report_per_class
    evaluation.score(trained, protocols=("report",), profile=p)
    cache.calls.clear()
    bug = studies.class0_bug(trained, profile=p, seed=0)
    assert cache.calls == [(None, sampling_count(n))]        # only the "no class" stream
    # the numbers the study computed before it went through the source
    real = fid.real_features("train", n=n, label=0, seed=0)
    seeds = sampling.sample_seeds(0, n)
    for how, labels in (("as class 0", 0), ("report's if target: (no class)", None)):
        x = sampling.sample(trained.denoiser, seeds=seeds, labels=labels, steps=p.sampler_steps)
        assert bug["fid"][how] == fid.fid_from_features(network.features(x.clamp(-1, 1)), real)


def sampling_count(n):
    return sources.padded_count(n, multiple=sources.CPU_MULTIPLE)


def test_another_process_reads_the_cache_and_extends_it(cache, random_class_model, tmp_path):
    """A second process: it reuses the first's features and extends them; the numbers are those
    of one uninterrupted draw, whichever process computed which rows."""
    torch.save(random_class_model, tmp_path / "model.pt")
    src = sources.SampleSource(random_class_model, SPEC)
    first = src.features(4, 5, 4)
    pooled_features = network.features        # the stand-in the fixture set
    child = f"""
import json
import numpy as np
import torch
import torch.nn.functional as F
from diffnb.evaluation import sources
from diffnb.evaluation import SamplerSpec
from diffnb.fid import network
{inspect.getsource(pooled_features)}
pooled_features.__module__ = {pooled_features.__module__!r}  # the parent's stand-in, by name
network.features = pooled_features
den = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)
src = sources.SampleSource(den, SamplerSpec(steps=2))
np.save({str(tmp_path / 'child.npy')!r}, src.features(4, 9, 4))
print(json.dumps([src.generated, src.reused]))
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [4, 5]
    extended = np.load(tmp_path / "child.npy")
    whole = sources.SampleSource(random_class_model, SPEC, cache=False).features(4, 9, 4)
    assert np.array_equal(extended, whole) and np.array_equal(extended[:5], first)


def test_plain_generators_still_work_and_features_are_checked(cache, random_class_model):
    res = fid.evaluate(PerClassSource(random_class_model, SPEC), protocol="report", n=2,
                       warn=False)
    assert len(res["per_class"]) == 10
    bad = SimpleNamespace(features=lambda label, n, seed, **kw: np.zeros((n - 1, 16)))
    with pytest.raises(ValueError, match=r"must return \(n, D\) features"):
        fid.evaluate(bad, protocol="report", n=2, warn=False)


def test_importing_fid_loads_neither_sampling_nor_training():
    code = ("import sys, diffnb.fid; print(any(m in sys.modules for m in "
            "('diffnb.diffusion.sampling', 'diffnb.training', 'diffnb.evaluation.sources')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_batched_path_equals_per_class_path_with_inception(tmp_path, monkeypatch, trained):
    """The same with pytorch-fid's Inception (its features of an image do not depend on the
    batch on this CPU): the report protocol at n=2, old path vs batched and cached."""
    monkeypatch.setattr(reference, "stats_dir", lambda: tmp_path / "stats")
    monkeypatch.setattr(generated, "store_dir", lambda: tmp_path / "generated")
    (tmp_path / "stats").mkdir()
    old = fid.evaluate(PerClassSource(trained.denoiser, SPEC), protocol="report", n=2, warn=False)
    for _ in range(2):
        src = sources.SampleSource(trained.denoiser, SPEC)
        assert fid.evaluate(src, protocol="report", n=2, warn=False) == old
    assert (src.generated, src.reused) == (0, 20)


@pytest.fixture
def reader(monkeypatch):
    """A random classifier standing in for the kept one (scoring.kept_reader), with a manifest."""
    from diffnb.evaluation import classifier, reading

    torch.manual_seed(1)
    model = classifier.Classifier(width=4).eval()
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, std=0.5)
    monkeypatch.setattr(reading, "kept_reader", lambda: model)
    per_class = {c: 0.5 + 0.05 * k for k, c in enumerate(data.CLASS_NAMES)}
    monkeypatch.setattr(classifier, "manifest",
                        lambda: {"sha256": "stand-in", "test_accuracy_per_class": per_class})
    return model


def test_the_classifier_reads_the_scored_samples_and_its_reading_is_cached(cache, trained,
                                                                            reader):
    """Each class's own-class share is the classifier's reading of exactly the samples FID saw;
    scored again, nothing is drawn and the reading comes from the cache."""
    from diffnb.evaluation import classifier

    p = runtime.profile()
    first = evaluation.score(trained, spec=SPEC, reuse=False)
    plain = sources.SampleSource(trained.denoiser, SPEC, cache=False)
    for protocol, sizes in evaluation.scoring._protocol_sizes(p).items():
        drawn = fid.draws(protocol, seed=0, class_conditional=True, **sizes)
        expected = [float((classifier.predict(reader, plain(torch.full((n,), c), n, s)) == c)
                          .float().mean()) for c, n, s in drawn]
        assert first[protocol]["own_class_share"] == expected
        assert first[protocol]["classified_per_class"] == [n for _, n, _ in drawn]
    assert len({round(x, 6) for x in first["standard"]["own_class_share"]}) > 1  # not constant
    second = evaluation.score(trained, spec=SPEC, reuse=False)
    assert second["generated_images"] == 0
    assert _numbers(second) == _numbers(first)
    table = evaluation.reading.own_class_table({"class_2": second}, protocol="standard")
    assert list(table.index) == [trained.preset.title, "classifier on real test images"]
    assert table.iloc[0].tolist() == second["standard"]["own_class_share"]
    assert table.iloc[1].tolist() == [0.5 + 0.05 * k for k in range(10)]


def test_features_cached_without_a_reading_are_drawn_again_for_the_reader(cache, trained,
                                                                          reader, monkeypatch):
    """A cache filled by scoring without the classifier: with it, the samples are drawn again
    (the reading needs the images), and the FID numbers are the same."""
    from diffnb.evaluation import reading

    monkeypatch.setattr(reading, "kept_reader", lambda: None)
    without = evaluation.score(trained, spec=SPEC, reuse=False)
    assert "own_class_share" not in without["report"] and without["classifier"] is None
    monkeypatch.setattr(reading, "kept_reader", lambda: reader)
    read = evaluation.score(trained, spec=SPEC, reuse=False)
    assert read["generated_images"] == without["generated_images"] > 0
    assert read["classifier"] == "stand-in"
    for protocol in fid.PROTOCOLS:
        assert {k: v for k, v in read[protocol].items() if k in without[protocol]} == \
            without[protocol]
