"""diffnb: an EDM-style diffusion model on Fashion-MNIST, one module per concept.

runtime (device, seed, profile), data, noise, plots, results, widgets,
config (presets), precond (EDM preconditioning), nets (residual networks), unet,
training, sampling, fid
"""
__version__ = "0.1.0"
