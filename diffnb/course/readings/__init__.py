"""Readings: the sentences after a figure or a table, computed from the numbers they describe.

Each function takes the table (a pandas DataFrame) or dict that a notebook has just computed and
returns a :class:`Reading`, a Markdown string. As the last expression of a notebook cell it is
shown as formatted text; its plain-text form is the text itself (no object repr). A reading states
no number, ranking or winner that it did not read from its argument, so it stays true in every
profile: the quick CPU profile and the full GPU profile give very different numbers.

The package imports nothing heavier than pandas, and pandas only where a function needs it:
  ``text``      :class:`Reading` and :func:`md`;
  ``training``  loss curves, how long models trained, the zero initialisation, which model a
                picker samples;
  ``noising``   notebooks 01-02: the noising grid, training noise levels, the schedule, samples;
  ``scores``    FID tables (slides 8, 9) and the README's line on them, floors, the ablation,
                solvers, the report's last row;
  ``ranking``   where our order of the report's eight models agrees with the report's;
  ``samples``   guidance sweeps and notebook 07's faces;
  ``classes``   what the classifier reads in the samples (notebook 05).
  ``conditioning`` the per-class panels of a class-conditional model (notebook 04).
"""
from __future__ import annotations

from diffnb.course.readings.classes import class_histogram, own_class
from diffnb.course.readings.conditioning import class_panels
from diffnb.course.readings.noising import base_samples, noise_columns, schedule_steps, training_sigmas
from diffnb.course.readings.ranking import ranking
from diffnb.course.readings.samples import (
    NO_CHANGE,
    attribute_effects,
    celeba_data,
    class_rows,
    guidance_sweep,
    null_condition,
)
from diffnb.course.readings.scores import (
    NFE_TOLERANCE,
    ablation,
    class0_bug,
    excess_ranking,
    floor_curve,
    headline,
    nfe,
    per_class,
    slide8,
    standard_score,
    versus_report,
)
from diffnb.course.readings.text import Reading, md
from diffnb.course.readings.training import explored, loss_curves, trained_runs, zero_init

__all__ = ["NFE_TOLERANCE", "NO_CHANGE", "Reading", "ablation", "attribute_effects",
           "celeba_data", "class0_bug", "class_histogram", "class_panels",
           "class_rows", "excess_ranking", "explored", "floor_curve",
           "guidance_sweep", "headline", "loss_curves", "md", "nfe", "null_condition",
           "own_class", "per_class", "ranking", "slide8", "standard_score", "versus_report", "zero_init",
           "base_samples", "noise_columns", "schedule_steps", "trained_runs", "training_sigmas"]
