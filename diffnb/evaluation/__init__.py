"""Scoring trained models, and the studies the notebooks read back.

  scoring      FID of a trained preset (report and standard protocols), saved with its
               provenance; ``python -m diffnb.evaluation PRESET``
  tables       the report's tables (slides 8-9) rebuilt from the saved scores
  sources      generated images as FID sources: seeded, batched, their features cached
  studies      the notebooks' studies (ablation, floor curve, class-0 bug ...), memoised
  classifier   a Fashion-MNIST classifier beside FID; ``python -m diffnb.evaluation.classifier``
  reading      what that classifier reads in the scored samples (own-class share, histogram)

The scoring names are re-exported here: ``from diffnb import evaluation`` then
``evaluation.score(trained)``; studies: ``from diffnb.evaluation import studies``.
"""
from diffnb.evaluation.reading import class_histogram_table, own_class_table
from diffnb.evaluation.scoring import (
    Change,
    SamplerSpec,
    SampleSource,
    ablation,
    floor_curve,
    nfe_study,
    one_warning,
    report_models,
    score,
)
from diffnb.evaluation.tables import (
    excess_over_floor,
    fid_weights,
    load_scores,
    rank_classes,
    report_slide9_table,
    slide8_table,
    slide9_table,
)

__all__ = ["Change", "SampleSource", "SamplerSpec", "ablation", "class_histogram_table",
           "excess_over_floor", "fid_weights", "floor_curve", "load_scores", "nfe_study",
           "one_warning", "own_class_table", "rank_classes", "report_models", "report_slide9_table", "score",
           "slide8_table", "slide9_table"]
