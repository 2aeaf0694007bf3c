"""Readings of notebooks 01 and 02 (diffnb.course.readings.noising, training.trained_runs): each test
checks a reading against an independent count on seeded random data, so that a reading that
ignores its data, reads the wrong end or states a number it was not given fails."""
import re

import numpy as np
import pytest

from diffnb.course import readings


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", text)]


# ---- noise_columns (notebook 01, slide 3) -----------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_noise_columns_names_the_first_column_above_sigma_data(seed):
    rng = np.random.default_rng(seed)
    sigmas = np.unique(np.round(rng.lognormal(0, 1.5, size=9), 2))
    sd = float(rng.uniform(sigmas[1], sigmas[-2]))
    first = float(sigmas[sigmas > sd][0])
    r = readings.noise_columns(sigmas.tolist(), sigma_data=sd, sigma_max=float(sigmas[-1]))
    assert f"From the column $\\sigma = {first:g}$ on" in r
    assert f"= {sd:.3f}" in r
    assert f"The last column, $\\sigma = {sigmas[-1]:g}$, is where sampling starts" in r


def test_noise_columns_says_where_the_last_column_lies_against_sigma_max():
    grid = [0.0, 0.1, 1.0, 5.0]
    assert "still below $\\sigma_\\max = 80$" in readings.noise_columns(grid, sigma_data=0.5, sigma_max=80)
    assert "lies above $\\sigma_\\max = 2$" in readings.noise_columns(grid, sigma_data=0.5, sigma_max=2)
    assert "In every column" in readings.noise_columns([1.0, 2.0], sigma_data=0.5, sigma_max=2)
    assert "In no column" in readings.noise_columns([0.1, 0.2], sigma_data=0.5, sigma_max=2)
    with pytest.raises(ValueError):
        readings.noise_columns([1.0, 0.5], sigma_data=0.5, sigma_max=80)


# ---- training_sigmas (notebook 01, slide 4) ---------------------------------------------------

@pytest.mark.parametrize("P_mean, P_std", [(-1.2, 1.2), (0.0, 0.5), (1.5, 1.0)])
def test_training_sigmas_counts_the_shares_and_the_largest_draw(P_mean, P_std):
    draws = np.exp(np.random.default_rng(0).normal(P_mean, P_std, size=5000)).clip(0.002, 80)
    r = readings.training_sigmas(draws.tolist(), sigma_data=0.66, sigma_max=80)
    assert r.startswith(f"{(draws < 0.66).mean():.0%} of the draws lie below")
    assert f"and {(draws > 5).mean():.1%} above $\\sigma = 5$" in r
    assert "of the 5,000 draws" in r
    if draws.max() < 80:
        assert f"is $\\sigma = {draws.max():.1f}$, below" in r
    else:
        assert "reaches $\\sigma_\\max = 80$" in r
    assert ("rarely sees the highest levels" in r) == ((draws > 5).mean() < readings.noising.RARE)


def test_training_sigmas_never_prints_a_largest_draw_that_reads_as_sigma_max():
    r = readings.training_sigmas([0.1, 79.97], sigma_data=0.5, sigma_max=80)
    assert "$\\sigma = 79.97$, below" in r
    assert "reaches" in readings.training_sigmas([0.1, 80.0], sigma_data=0.5, sigma_max=80)


# ---- schedule_steps (notebook 01, slide 5) ----------------------------------------------------

def karras(n: int, rho: float, sigma_max: float = 80.0, sigma_min: float = 0.002) -> list[float]:
    i = np.arange(n) / (n - 1)
    s = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return [*s.tolist(), 0.0]


@pytest.mark.parametrize("n, below", [(50, 1.0), (12, 0.1), (30, 10.0)])
def test_schedule_steps_counts_the_steps_below(n, below):
    schedules = {rho: karras(n, rho) for rho in (1, 3, 7, 15)}
    r = readings.schedule_steps(schedules, below=below)
    counts = {rho: sum(x < below for x in s[:-1]) for rho, s in schedules.items()}
    listing = ", ".join(f"{k} with $\\rho = {rho}$" for rho, k in counts.items())
    assert f"of {n}: {listing}." in r
    assert "Every schedule runs from 80 to 0.002 (then 0)" in r
    order = [counts[rho] for rho in sorted(counts)]
    assert ("the more steps below" in r) == all(a < b for a, b in zip(order, order[1:]))


def test_schedule_steps_names_each_schedule_s_ends_when_they_differ():
    r = readings.schedule_steps({1: karras(10, 1, sigma_max=5.0), 7: karras(10, 7)})
    assert "do not share their ends" in r
    assert "$\\rho = 1$ runs from 5 to 0.002" in r and "$\\rho = 7$ runs from 80 to 0.002" in r


# ---- base_samples and trained_runs (notebook 02) ---------------------------------------------

def test_base_samples_reads_its_arguments():
    r = readings.base_samples(["base_1", "base_2"], samples=16, profile="quick", epochs=2)
    assert "Both panels use the same 16 seeds" in r
    assert "base_1 and base_2 are quick-profile models trained for 2 epochs" in r
    r = readings.base_samples(["a", "b", "c"], samples=64, profile="full", epochs={"a": 50, "b": 50, "c": 100})
    assert "All 3 panels use the same 64 seeds" in r
    assert "50 epochs (a), 50 epochs (b) and 100 epochs (c)" in r
    r = readings.base_samples(["a"], samples=4, profile="cpu", epochs=1)
    assert "a is a cpu-profile model trained for 1 epoch;" in r and "scores it" in r
    assert sorted(numbers(r)) == [1, 4, 5]   # 5: notebook 05


@pytest.mark.parametrize("seed", range(3))
def test_trained_runs_gives_each_model_s_final_losses(seed):
    rng = np.random.default_rng(seed)
    histories = {name: {"train_loss": rng.uniform(0, 1, size=k).tolist(),
                        "valid_loss": rng.uniform(0, 1, size=k).tolist()}
                 for name, k in (("base_1", 3), ("base_2", 3))}
    r = readings.trained_runs(histories, epoch_images=50_000)
    assert r.startswith("base_1 and base_2 trained for 3 epochs of 50,000 images each.")
    for name, h in histories.items():
        assert f"{name} {h['train_loss'][-1]:.3f} / {h['valid_loss'][-1]:.3f}" in r
    histories["base_2"]["train_loss"].append(0.5)
    r = readings.trained_runs(histories, epoch_images={"base_1": 64, "base_2": 128})
    assert "base_1 3 epochs of 64 images, base_2 4 epochs of 128 images" in r
    assert "base_2 0.500 /" in r
