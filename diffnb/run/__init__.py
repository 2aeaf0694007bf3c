"""The run queue: a profile's work as named stages, their cost, notebook execution, kept weights.

  pipeline   ``python -m diffnb.run.pipeline PROFILE``: run the stages in order (make reproduce)
  stages     the plan: stages, their FLOPs and expected seconds, what is done
  flops      FLOPs of a forward pass and of a preset's training
  execute    every notebook executed in order, saved without per-run noise
  weights    ``python -m diffnb.run.weights keep|check PROFILE``: finished models as plain files

Each module is a command or is imported by one; import them by name
(``from diffnb.run import flops``): this file imports none of them.
"""
