"""diffnb: an EDM-style diffusion model on Fashion-MNIST, one folder per concept.

A reading order, the diffusion core first:
  diffusion/    noise (the forward process) -> precond (the denoiser D around a network F)
                -> sampling (the reverse process, guidance)
  training/     loop (load_or_train, train) and what it stands on: datasets, epochs,
                schedules, checkpoints, distributed; ``python -m diffnb.training PRESET``
  models/       the network F: resnet (the report's), unet, conditioning on sigma and label
  config.py     the presets: frozen model and training configurations
  data/         Fashion-MNIST, CelebA, labels
  fid/          FID and KID, a pure metric package
  evaluation/   scoring trained models, the notebooks' studies, a classifier beside FID
  course/       what a notebook shows: plots, tables, widgets, readings
  run/          the run queue: ``python -m diffnb.run.pipeline PROFILE``, kept weights
  runtime.py    device, seed, the run's profile, output folders; results.py: the one atomic writer
  profiles.py   the profiles: loop sizes of a run (cpu, quick, tiny, full)

Imports only go down: run > evaluation > training > models > config, course > diffusion, fid
> data > results > runtime > profiles > hardware (the layers contract in pyproject.toml, checked
by lint-imports).
"""
__version__ = "0.1.0"
