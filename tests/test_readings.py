"""diffnb.course.readings: every sentence names the winner, the ranking and the numbers of the data it is
given. Each test checks a reading against an independent computation on the same data, on tables
in more than one order and with more than one winner, so that a reading that ignores its data,
or reads the wrong column or the wrong end of a ranking, fails."""
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from diffnb.course import readings

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?", text)]


def shuffled(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    return df.sample(frac=1, random_state=seed)


# ---- the Reading type ------------------------------------------------------------------------

def test_reading_is_a_markdown_string_with_a_clean_repr():
    r = readings.md("**class_3** scores 12.5")
    assert isinstance(r, str) and r == "**class_3** scores 12.5"
    assert repr(r) == str(r) and r._repr_markdown_() == str(r)
    formatter = pytest.importorskip("IPython.core.formatters").DisplayFormatter()
    data, _ = formatter.format(r)
    assert data == {"text/plain": str(r), "text/markdown": str(r)}


def test_readings_imports_alone_without_torch():
    code = ("import sys, diffnb.course.readings; "
            "bad = [m for m in ('torch', 'matplotlib', 'diffnb.runtime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- training ------------------------------------------------------------------------------

def history(valid, train=None):
    return {"valid_loss": list(valid), "train_loss": list(train or valid)}


@pytest.mark.parametrize("seed", range(12))
def test_loss_curves_lists_final_losses_lowest_first(seed):
    rng = np.random.default_rng(seed)
    hs = {f"m{i}": history(rng.uniform(0.2, 1.0, size=5)) for i in range(4)}
    text = readings.loss_curves(hs)
    listed = re.search(r"lowest first: (.*?)\.(?: |$)", text).group(1)
    names = [part.split()[0] for part in listed.split(", ")]
    assert names == sorted(hs, key=lambda k: hs[k]["valid_loss"][-1])
    for part in listed.split(", "):
        name, value = part.split()
        assert float(value) == pytest.approx(hs[name]["valid_loss"][-1], abs=5e-4)
    expected_fell = [k for k, h in hs.items() if h["valid_loss"][-1] < h["valid_loss"][-2]]
    if 0 < len(expected_fell) < len(hs):
        fell = re.search(r"fell for (.*?) and did not fall for (.*?)\.", text)
        assert set(re.split(r", | and ", fell.group(1))) == set(expected_fell)
        assert set(re.split(r", | and ", fell.group(2))) == set(hs) - set(expected_fell)
    elif expected_fell:
        assert "the validation loss fell for every model." in text
    else:
        assert "the validation loss did not fall for any model." in text


@pytest.mark.parametrize("valid, says", [([1.0, 0.5], "fell for a."), ([0.5, 0.7], "did not fall for a."),
                                         ([0.5], None)])
def test_loss_curves_of_one_model(valid, says):
    text = readings.loss_curves({"a": history(valid)})
    assert text.startswith(f"Final validation loss: a {valid[-1]:.3f}.")
    if says:
        assert text.count("In the last epoch") == 1 and says in text
    else:
        assert "In the last epoch" not in text


def test_loss_curves_explain_a_validation_loss_below_the_training_loss():
    hs = {"a": history([1.0, 0.5], train=[3.0, 2.0]), "b": history([1.0, 0.9], train=[1.0, 0.95])}
    text = readings.loss_curves(hs)
    assert "ends well below the training loss for a. The training loss is the mean" in text
    assert "for b" not in text.split("ends well below")[1].split(".")[0]
    assert "ends well below" not in readings.loss_curves({"b": hs["b"]})
    assert "A dashed line far above" in text


def test_loss_curves_explain_once_and_later_point_back():
    hs = {"a": history([1.0, 0.5], train=[3.0, 2.0]), "b": history([1.0, 0.9], train=[1.0, 0.95])}
    later = readings.loss_curves(hs, explain=False)
    assert "ends well below the training loss for a (notebook 02 says why)." in later
    assert "mean over the epoch" not in later and "dashed line" not in later
    assert later.startswith(readings.loss_curves(hs).split(" The validation loss ends")[0])


@pytest.mark.parametrize("on_lower", [True, False])
def test_zero_init_reports_both_runs_and_the_right_direction(on_lower):
    low, high = [1.2, 1.0, 0.9, 0.8], [1.9, 9.0, 12.0, 20.0]
    losses = {True: low, False: high} if on_lower else {True: high, False: low}
    text = readings.zero_init(losses)
    nums = numbers(text)
    assert nums[:2] == pytest.approx([losses[True][0], losses[False][0]], abs=5e-4)
    means = [np.mean(losses[True]), np.mean(losses[False])]
    assert nums[3:5] == pytest.approx(means, abs=5e-4)
    assert ("times lower" in text) == on_lower and ("higher on average" in text) == (not on_lower)


@pytest.mark.parametrize(("profile", "run", "says"), [
    ("full", "quick", "the full run's pick by the same rule, from its kept weights: this quick run "
                      "trained nothing for it."),
    ("cpu", "quick", "the cpu run's pick by the same rule, from its kept weights: this quick run "
                     "trained nothing for it."),
    ("quick", "quick", "this quick run's pick: no weights of these models trained longer are kept"),
    ("full", "full", "this run's pick."),
])
def test_explored_names_the_model_and_where_it_was_trained(profile, run, says):
    text = readings.explored("class_4", profile=profile, run_profile=run)
    assert text.startswith("The picker samples class_4, ") and says in text


# ---- FID tables --------------------------------------------------------------------------------

def slide8_table(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    presets = ["base_1", "base_2", "condbn_1", "condbn_2", "class_1", "class_2", "class_3", "class_4"]
    return pd.DataFrame({
        "preset": presets, "model": presets,
        "report FID (slide 8)": [127.18, 113.27, 113.73, 107.05, 89.56, 87.83, 89.88, 87.86],
        "ours, report protocol": rng.uniform(50, 500, 8), "floor (report)": [229.0] * 4 + [169.3] * 4,
        "ours, standard (pooled)": rng.uniform(20, 400, 8), "floor (standard)": [14.0] * 8,
        "KID x1e3": rng.uniform(0, 400, 8), "n report": [8] * 8, "n standard": [60] * 8})


@pytest.mark.parametrize("seed", range(5))
def test_slide8_names_the_lowest_fid_of_each_protocol(seed):
    t = slide8_table(seed)
    for table in (t, shuffled(t, seed)):
        text = readings.slide8(table)
        named = re.findall(r"\*\*(\w+)\*\*", text)
        best_rep = t.loc[t["ours, report protocol"].idxmin(), "preset"]
        best_std = t.loc[t["ours, standard (pooled)"].idxmin(), "preset"]
        assert named == ([best_rep] if best_rep == best_std else [best_rep, best_std])
        assert f"{t['ours, report protocol'].min():.1f}" in text
        assert f"{t['ours, standard (pooled)'].min():.1f}" in text
        gap = t["ours, standard (pooled)"] - t["floor (standard)"]
        assert f"from {gap.min():.1f} ({t.loc[gap.idxmin(), 'preset']}) to {gap.max():.1f} " \
               f"({t.loc[gap.idxmax(), 'preset']})" in text
        rank = int(t["ours, report protocol"].rank(method="min")[5])      # class_2: the report's best
        assert "class_2's (87.83, slide 8)" in text and f"ranks {rank} of 8" in text


@pytest.mark.parametrize("seed", range(3))
def test_headline_gives_each_protocols_range_and_the_reports(seed):
    t = slide8_table(seed)
    text = readings.headline(t)
    spans = [(round(t[c].min()), round(t[c].max())) for c in
             ("ours, report protocol", "ours, standard (pooled)", "report FID (slide 8)")]
    assert text == ("{}-{} (report protocol; {}-{} standard) against the report's {}-{}"
                    .format(*(x for span in spans for x in span)))


@pytest.mark.parametrize("n_standard", [60, 2048, 10_000])
def test_slide8_says_small_sets_do_not_rank_the_models(n_standard):
    t = slide8_table(0).assign(**{"n standard": n_standard})
    text = readings.slide8(t)
    small = n_standard < 2048
    assert ("they do not rank the models" in text) == small
    if small:
        assert f"With n = {n_standard} images per set" in text


def test_the_readings_small_sample_threshold_is_fids():
    from diffnb.fid import distance
    assert readings.scores.SMALL_SAMPLE == distance.SMALL_SAMPLE


def per_class_table(seed: int, *, floor: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = {f"Model {i}": rng.uniform(40, 500, 10) for i in range(1, 5)}
    if floor:
        rows["real vs real (n=8)"] = rng.uniform(90, 230, 10)
    return pd.DataFrame(rows, index=CLASSES).T


@pytest.mark.parametrize("seed", range(5))
def test_per_class_counts_the_worst_and_best_class_of_each_row(seed):
    t = per_class_table(seed)
    models = t.iloc[:-1]
    text = readings.per_class(t, floor_row=t.index[-1])
    worst_part = re.search(r"Worst class \(red\): (.*?)\. Best", text).group(1)
    best_part = re.search(r"Best class \(green\): (.*?)\.(?: The|$)", text).group(1)
    for part, picks in ((worst_part, models.idxmax(axis=1)), (best_part, models.idxmin(axis=1))):
        found = dict(re.findall(r"([A-Za-z/ -]+?) in (\d) of 4 rows?", part))
        found = {k.strip(" ,").removeprefix("and ").strip(): int(v) for k, v in found.items()}
        assert found == picks.value_counts().to_dict()
    floor = t.iloc[-1]
    assert f"highest for {floor.idxmax()} ({floor.max():.1f})" in text
    assert f"lowest for {floor.idxmin()} ({floor.min():.1f})" in text


def report_slide9() -> pd.DataFrame:
    return pd.DataFrame({   # slide 9 of the report
        "Model 1": [133.04, 53.28, 80.15, 75.14, 82.55, 113.3, 86.5, 83.14, 120.5, 68.08],
        "Model 2": [137.15, 46.14, 83.54, 79.88, 91.1, 113.13, 80.36, 76.29, 106.8, 63.89],
        "Model 3": [135.52, 55.20, 90.01, 73.28, 78.87, 114.8, 91.26, 84.59, 104.88, 70.23],
        "Model 4": [143.98, 46.52, 86.13, 78.49, 87.51, 116.65, 85.5, 69.1, 102.39, 62.43]},
        index=CLASSES).T


def test_per_class_on_the_reports_slide9_says_tshirt_is_worst_everywhere():
    report = report_slide9()
    text = readings.per_class(report)
    assert "Worst class (red): T-shirt/top in 4 of 4 rows (133.0 to 144.0)." in text
    assert "Best class (green): Trouser in 4 of 4 rows (46.1 to 55.2)." in text


@pytest.mark.parametrize("n64, monotone", [(True, True), (False, True), (True, False)])
def test_floor_curve_reads_the_value_at_the_reports_n(n64, monotone):
    ns = [8, 16, 32, 64, 128] if n64 else [8, 16, 32, 128]
    values = [230.0, 176.0, 136.0, 102.8, 76.2][:len(ns)] if n64 else [230.0, 176.0, 136.0, 76.2]
    if not monotone:
        values[2] = 300.0
    curve = pd.DataFrame({"n": ns, "real_vs_real_fid": values}).iloc[::-1]   # any order
    text = readings.floor_curve(curve)
    assert text.startswith(f"Two sets of real images score {values[0]:.1f} at n = {ns[0]} and "
                           f"{values[-1]:.1f} at n = {ns[-1]}")
    assert ("falls at every step" in text) == monotone
    if n64:
        assert "At the report's n = 64 it is 102.8" in text
        assert "all classes mixed" in text and "per-class FID" in text   # not a per-class bound
    else:
        assert "n = 64 (the report's) was not measured" in text


@pytest.mark.parametrize("seed", range(3))
def test_floor_curve_gives_the_range_of_the_reports_slide9(seed):
    rng = np.random.default_rng(seed)
    report = pd.DataFrame(rng.uniform(50, 250, size=(4, 10)), columns=CLASSES)
    curve = pd.DataFrame({"n": [16, 64], "real_vs_real_fid": [180.0, 100.0]})
    text = readings.floor_curve(curve, report=report)
    assert (f"range from {report.to_numpy().min():.1f} to {report.to_numpy().max():.1f}"
            in text)
    assert "slide 9" not in readings.floor_curve(curve)


@pytest.mark.parametrize(("as_class", "as_report", "bug_shows"),
                         [(120.0, 150.0, True), (150.0, 120.0, False), (130.0, 130.0, False)])
def test_class0_bug_says_whether_the_reports_way_scores_higher(as_class, as_report, bug_shows):
    bug = {"n": 64, "fid": {"as class 0": as_class, "report's if target: (no class)": as_report}}
    text = readings.class0_bug(bug)
    assert "n = 64 T-shirts" in text
    assert f"as a class gives FID {as_class:.1f}" in text and f"gives {as_report:.1f}" in text
    assert ("part of the report's worst class was the bug" in text) == bug_shows


@pytest.mark.parametrize("own", [None, 0.834])
def test_standard_score_reads_fid_floor_share_and_the_ablations_smaller_n(own):
    row = {"FID": 14.26, "floor": 2.31, "n": 10_000, **({"own class": own} if own else {})}
    text = readings.standard_score(row)
    assert "10,000 samples" in text and "FID 14.3" in text and "score 2.3 at that n" in text
    assert ("83% of its samples" in text) == (own is not None)
    assert "ablation" not in text
    small = readings.standard_score(row, ablation_row={"FID": 25.04, "n": 2000, "floor": 9.5})
    assert "n = 2,000: FID 25.0, floor 9.5" in small
    assert "ablation" not in readings.standard_score(row, ablation_row={**row, "FID": 1.0})


@pytest.mark.parametrize("seed", range(5))
def test_excess_ranking_names_highest_floors_and_largest_excess(seed):
    t = per_class_table(seed)
    text = readings.excess_ranking(t, n=8)
    floor = t.iloc[-1]
    top3 = list(floor.sort_values(ascending=False).index[:3])
    listed = re.search(r"highest for (.*?) and lowest for", text).group(1)
    positions = [listed.index(c + " (") for c in top3]
    assert positions == sorted(positions)
    excess = (t.iloc[:-1] - floor).mean()
    assert f"{excess.idxmax()} is furthest ({excess.max():.1f})" in text
    assert f"{excess.idxmin()} closest ({excess.min():.1f})" in text
    fr = list(floor.sort_values(ascending=False).index).index("T-shirt/top") + 1
    er = list(excess.sort_values(ascending=False).index).index("T-shirt/top") + 1
    assert f"floor ranks {fr} of 10" in text and f"over the floor {er} of 10" in text
    assert "In the report" not in text


@pytest.mark.parametrize("tshirt_floor, explained", [(50.0, False), (500.0, True)])
def test_excess_ranking_weighs_the_reports_tshirt_against_its_floor_here(tshirt_floor, explained):
    t = per_class_table(0)
    t.loc[t.index[-1], "T-shirt/top"] = tshirt_floor
    report = report_slide9()
    text = readings.excess_ranking(t, n=8, report=report)
    assert "In the report, T-shirt/top is the worst class in 4 of 4 models" in text
    assert ("is among the 3 highest" in text) == explained
    assert ("not among the 3 highest" in text) == (not explained)
    report["T-shirt/top"] = 0.0
    text = readings.excess_ranking(t, n=8, report=report)
    assert "T-shirt/top is not the worst class of any model" in text


# ---- notebook 06 -------------------------------------------------------------------------------

def ablation_table(fids):
    return pd.DataFrame({"change": [f"change {i}" for i in range(len(fids))], "FID": fids,
                         "floor": [94.44] * len(fids), "n": [60] * len(fids)})


def test_ablation_names_the_lowest_row_and_says_whether_it_is_the_last():
    text = readings.ablation(ablation_table([363.2, 402.0, 354.4, 377.3]))
    assert "Lowest FID: **change 2** (354.4, row 3 of 4)" in text
    assert "The last row (change 3) scores 377.3" in text and "not the best row" in text
    assert "down with change 2 (-47.6)" in text
    assert "up with change 1 (+38.8) and change 3 (+22.9)" in text
    text = readings.ablation(ablation_table([363.2, 402.0, 354.4, 300.0]))
    assert "Lowest FID: **change 3**" in text and "It is also the last row" in text
    assert "n = 60" in text and "94.4" in text


def test_ablation_calls_a_change_that_rounds_to_zero_unchanged():
    text = readings.ablation(ablation_table([363.2, 402.0, 402.04, 354.4]))
    assert "unchanged with change 2." in text
    assert "change 2 (+" not in text and "change 2 (-" not in text
    assert "up with change 1 (+38.8);" in text


def nfe_table(points):
    return pd.DataFrame(points, columns=["solver", "steps", "NFE", "FID"])


def test_nfe_says_which_solver_wins_at_each_nfe():
    quick = nfe_table([("euler", 5, 5, 442.08), ("euler", 25, 25, 394.68),
                       ("heun", 3, 5, 450.13), ("heun", 13, 25, 385.83)])
    text = readings.nfe(quick)
    assert "at NFE 5, euler (euler 442.1, heun 450.1)" in text
    assert "at NFE 25, heun (euler 394.7, heun 385.8)" in text
    assert text.endswith("Lowest FID overall: heun, 13 steps (NFE 25), 385.8.")
    text = readings.nfe(quick.iloc[::-1])
    assert "at NFE 5, euler" in text and "at NFE 25, heun" in text


def test_nfe_pairs_the_full_profiles_neighbouring_step_counts():
    euler = [("euler", k, k, 100 / k) for k in (10, 18, 35, 50, 100)]
    heun = [("heun", k, 2 * k - 1, 57 / k) for k in (6, 10, 18, 26, 50)]
    text = readings.nfe(nfe_table(euler + heun))
    for e, h in ((10, 11), (18, 19), (50, 51)):
        assert f"at NFE {e} vs {h}, " in text
    assert "at NFE 35, " in text and "at NFE 99 vs 100, " in text
    wins = re.findall(r"at NFE [\d vs]+, (\w+) \(", text)
    assert wins == ["euler" if e[3] < h[3] else "heun" for e, h in zip(euler, heun)]
    best = min(euler + heun, key=lambda p: p[3])
    assert f"Lowest FID overall: {best[0]}, {best[1]} steps (NFE {best[2]})" in text


def test_nfe_without_comparable_points_says_so():
    text = readings.nfe(nfe_table([("euler", 5, 5, 400.0), ("heun", 13, 25, 380.0)]))
    assert text.startswith("No two solvers were run at about the same number")
    text = readings.nfe(nfe_table([("euler", 5, 5, 400.0), ("heun", 3, 5, 400.0)]))
    assert "at NFE 5, a tie" in text


def test_versus_report_counts_the_classes_below_the_reports():
    report = dict(zip(CLASSES, [137.15, 46.14, 83.54, 79.88, 91.1, 113.13, 80.36, 76.29, 106.8, 63.89]))
    ours = {c: v + (10 if i % 3 else -10) for i, (c, v) in enumerate(report.items())}
    floor = {c: 40.0 + i for i, c in enumerate(CLASSES)}
    t = pd.DataFrame({"report": report, "ours": ours, "floor": floor}).T
    text = readings.versus_report(t, ours="ours", report="report", floor_row="floor", n_ours=64)
    lower = [c for c in CLASSES if ours[c] < report[c]]
    assert f"in {len(lower)} of 10 classes ({', '.join(lower[:-1])} and {lower[-1]})" in text
    excess = pd.Series(ours) - pd.Series(floor)
    assert f"furthest for {excess.idxmax()} ({excess.max():.1f})" in text
    assert f"closest for {excess.idxmin()} ({excess.min():.1f})" in text
    assert "n = 64 per class, ours" not in text
    text = readings.versus_report(t, ours="ours", report="report", floor_row="floor", n_ours=8)
    assert "ours and the floor at n = 8" in text


# ---- notebook 04 -------------------------------------------------------------------------------

def test_class_rows_compares_label_and_seed_and_finds_the_closest_classes():
    import torch

    names = ["A", "B", "C"]
    # 3 classes x 2 seeds, constant images: class offset + seed offset
    offsets, seeds = [0.0, 0.5, 0.05], [0.0, 0.2]
    samples = torch.stack([torch.full((1, 2, 2), o + s) for o in offsets for s in seeds])
    text = readings.class_rows(samples, names)
    assert f"moves a sample by {(0.5 + 0.05 + 0.45) / 3:.3f} on average" in text
    assert "within a row, by 0.200" in text
    assert "Closest rows: A and C (0.050); furthest: A and B (0.500)." in text
    same = torch.stack([torch.full((1, 2, 2), s) for _ in offsets for s in seeds])
    text = readings.class_rows(same, names)
    assert "moves a sample by 0.000" in text and "does not use its label yet" in text


# ---- notebook 07: CelebA -----------------------------------------------------------------------

def _faces_grid(row_keys, seeds, effect):
    """Constant 3x4x4 images: seed value + the attribute effects of the row (row-major)."""
    import torch

    return torch.stack([torch.full((3, 4, 4), s + sum(e * v for e, v in zip(effect, key)))
                        for key in row_keys for s in seeds])


@pytest.mark.parametrize("reverse", [False, True])
def test_attribute_effects_compares_each_attribute_with_the_seed(reverse):
    import torch

    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    keys = keys[::-1] if reverse else keys
    samples = _faces_grid(keys, seeds=[0.0, 0.1, 0.2], effect=(0.3, 0.001))
    text = readings.attribute_effects(samples, torch.tensor(keys), ("Smiling", "Male"))
    assert "moves a sample by 0.300 (Smiling) and 0.001 (Male)" in text
    assert "Changing the seed at fixed attributes moves it by 0.100." in text
    assert "Smiling moves it more than a new seed does" in text
    assert "Male changes the samples by less than 0.005" in text and "does not use it yet" in text
    samples = _faces_grid(keys, seeds=[0.0, 0.1, 0.2], effect=(0.05, 0.02))
    text = readings.attribute_effects(samples, torch.tensor(keys), ("Smiling", "Male"))
    assert "0.050 (Smiling) and 0.020 (Male)" in text
    assert "Smiling and Male move a sample less than a new seed does" in text
    assert "does not use" not in text


def test_guidance_sweep_reads_movement_and_clipping():
    import torch

    base = torch.linspace(-0.9, 0.9, 100)
    columns = [base * (1 + 0.25 * k) for k in range(4)]           # w = 1, 2, 3, 4
    text = readings.guidance_sweep(columns, [1, 2, 3, 4])
    for k in (1, 2, 3):
        assert f"{float((columns[k] - base).abs().mean()):.3f} at w = {k + 1}" in text
    shares = [100 * float((c.abs() > 1).float().mean()) for c in columns]
    assert shares[0] == 0 and all(b > a for a, b in zip(shares, shares[1:]))
    assert f"{shares[3]:.1f}% at w = 4" in text and "rises with every step of w" in text
    same = readings.guidance_sweep([base] * 3, [1, 2, 3])
    assert "the model does not use its condition (class or attributes) yet" in same
    assert "No pixel leaves" in same
    clipped = readings.guidance_sweep([base * 2] * 3, [1, 2, 3])
    assert "The share is the same at every w" in clipped and "does not rise" not in clipped
    bumpy = readings.guidance_sweep([base * 2, base * 3, base * 2.5], [1, 2, 3])
    assert "does not rise with every step of w here" in bumpy


def test_null_condition_finds_the_nearest_row_and_the_most_common_combination():
    import torch

    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    conditioned = _faces_grid(keys, seeds=[0.0, 0.5], effect=(0.3, -0.1))
    null = _faces_grid([(0, 0)], seeds=[0.0, 0.5], effect=(0, 0)) - 0.1   # nearest: (0, 1)
    train = torch.tensor([[0, 1]] * 5 + [[1, 1]] * 3 + [[0, 0]] * 2)
    text = readings.null_condition(null, conditioned, torch.tensor(keys), ("Smiling", "Male"),
                                   train_attributes=train)
    assert "nearest to the row 'Male' (0.000) and furthest from 'Smiling' (0.400)" in text
    assert "most common combination among the training faces is 'Male' (50%)" in text
    assert "the null samples sit nearest to it" in text
    train = torch.tensor([[1, 1]] * 6 + [[0, 1]] * 4)
    text = readings.null_condition(null, conditioned, torch.tensor(keys), ("Smiling", "Male"),
                                   train_attributes=train)
    assert "'Smiling, Male' (60%); the null samples do not sit nearest to it" in text
    flat = _faces_grid(keys, seeds=[0.0, 0.5], effect=(0, 0))
    text = readings.null_condition(flat[:2], flat, torch.tensor(keys), ("Smiling", "Male"))
    assert "as far from every row (0.000 to 0.000" in text and "does not use the attributes" in text


def test_celeba_data_reads_the_attribute_shares():
    import torch

    attributes = torch.tensor([[1, 0, 0]] * 3 + [[1, 1, 0]] * 1 + [[0, 0, 1]] * 4)
    text = readings.celeba_data(attributes, ("Smiling", "Male", "Eyeglasses"), sigma_data=0.5123)
    assert "Of the 8 training faces, 50% are Smiling, 12% are Male and 50% are Eyeglasses." in text
    assert "The rarest, Male," in text and "sigma_data = 0.512" in text


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


@pytest.mark.parametrize("seed", range(4))
def test_own_class_names_the_best_row_and_each_rows_class_furthest_below_the_ceiling(seed):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.uniform(0.2, 0.9, (3, 10)), columns=CLASSES, index=["A", "B", "C"])
    table.loc["ceiling"] = rng.uniform(0.8, 1.0, 10)
    text = readings.own_class(shuffled(table, seed), ceiling_row="ceiling")
    models = table.drop(index="ceiling")
    best = models.mean(axis=1).idxmax()
    head = text.split(" the most samples")[0]              # "A draws" or "A and C draw" (a tie
    assert best in head and head.endswith(("draws", "draw"))  # at whole percents)
    assert f"{100 * models.loc[best].mean():.0f}%" in text
    ratio = models / table.loc["ceiling"]
    for m in models.index:
        assert f"{m} is furthest below the ceiling in {ratio.loc[m].idxmin()}:" in text


def test_class_histogram_names_each_models_most_and_least_drawn_class():
    table = pd.DataFrame([[0.1] * 10, [0.1] * 10], columns=CLASSES, index=["Base 1", "data"])
    table.loc["Base 1", "Bag"], table.loc["Base 1", "Trouser"] = 0.25, 0.0
    table.loc["Base 1", "Coat"] = 0.05
    text = readings.class_histogram(table, data_row="data")
    assert "Base 1 draws Bag most often (25% against 10% in the data) and Trouser least (0%)." in text


def test_own_class_names_every_model_of_a_tie():
    table = pd.DataFrame([[0.1] * 10, [0.1] * 10, [0.9] * 10], columns=CLASSES,
                         index=["A", "B", "ceiling"])
    assert readings.own_class(table, ceiling_row="ceiling").startswith("A and B draw the most")


# ---- where our order agrees with the report's (after slide 8) --------------------------------

REPORT_EIGHT = ["base_1", "base_2", "condbn_1", "condbn_2", "class_1", "class_2", "class_3",
                "class_4"]
CONDITIONAL = REPORT_EIGHT[4:]


def ranking_table(ours, floors=(108.6, 79.4)) -> pd.DataFrame:
    return pd.DataFrame({"preset": REPORT_EIGHT,
                         "report FID (slide 8)": [127.18, 113.27, 113.73, 107.05, 89.56, 87.83,
                                                  89.88, 87.86],
                         "ours, report protocol": list(ours),
                         "floor (report)": [floors[0]] * 4 + [floors[1]] * 4})


@pytest.mark.parametrize("seed", range(4))
def test_ranking_gives_spearmans_correlation_of_the_two_orders(seed):
    t = ranking_table(np.random.default_rng(seed).uniform(50, 300, 8))
    from scipy import stats
    rho = stats.spearmanr(t["ours, report protocol"], t["report FID (slide 8)"]).statistic
    for table in (t, shuffled(t, seed)):
        text = readings.ranking(table, conditional=CONDITIONAL)
        assert f"over the 8 models: {rho:.2f}" in text


def test_ranking_names_the_split_and_how_much_of_it_is_the_floor():
    ours = [177.3, 185.3, 184.4, 179.7, 138.7, 141.3, 122.0, 118.5]
    text = readings.ranking(ranking_table(ours), conditional=CONDITIONAL,
                            epochs=dict(zip(REPORT_EIGHT, [3] * 6 + [6] * 2)))
    assert "both put the class-conditional models" in text
    assert "their real-vs-real floor is 29 lower" in text               # 108.6 - 79.4
    assert "the worst of them (62) is still ahead of the best of the others (69)" in text
    assert "ours class_4 < class_3 < class_1 < class_2, the report's class_2 < class_4 < " \
           "class_1 < class_3 (within 2.0 of one another)" in text
    assert "Here class_3 and class_4, trained for 6 epochs" in text
    # The same floors: no share of the gap is the protocol's; the epochs do not lead: no claim.
    text = readings.ranking(ranking_table(ours, floors=(90.0, 90.0)), conditional=CONDITIONAL,
                            epochs=dict(zip(REPORT_EIGHT, [3, 3, 3, 3, 6, 6, 3, 3])))
    assert "floor is" not in text and "trained for 6 epochs" not in text


def test_ranking_says_when_the_split_is_only_the_reports():
    ours = [100.0, 185.3, 184.4, 179.7, 138.7, 141.3, 122.0, 118.5]     # base_1 beats them all
    text = readings.ranking(ranking_table(ours), conditional=CONDITIONAL)
    assert "Putting every class-conditional model ahead of the others: only the report's." in text
    assert "both put" not in text
    same = readings.ranking(ranking_table([127.18, 113.27, 113.73, 107.05, 89.56, 87.83, 89.88,
                                           87.86]), conditional=CONDITIONAL)
    assert "1.00 (1 = the same order)" in same and "Where they differ" not in same


def test_headline_names_the_one_model_the_standard_protocol_scored():
    t = slide8_table(1)
    t.loc[t["preset"] != "class_4", "ours, standard (pooled)"] = float("nan")
    text = readings.headline(t)
    std = t.loc[t["preset"] == "class_4", "ours, standard (pooled)"].iloc[0]
    assert f"; {std:.0f} standard, class_4 alone)" in text and "nan" not in text


def test_slide8_reads_a_standard_protocol_that_scored_one_model():
    t = slide8_table(2)
    t.loc[t["preset"] != "class_4", ["ours, standard (pooled)", "KID x1e3"]] = float("nan")
    t = t.assign(**{"n standard": 10_000})
    text = readings.slide8(t)
    row = t[t["preset"] == "class_4"].iloc[0]
    gap = row["ours, standard (pooled)"] - row["floor (standard)"]
    assert f"Above its floor, class_4's standard-protocol FID is {gap:.1f}, the only" in text
    assert "ranges from" not in text and "nan" not in text
