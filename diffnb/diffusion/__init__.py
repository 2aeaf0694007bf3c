"""The EDM core (Karras et al. 2022): it knows no network and no preset.

Read in this order:
  noise      the forward process: sigma(t), training noise levels, the sampler's sigma steps
  precond    the denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) around any network F
  sampling   the reverse process: Euler and Heun steps, classifier-free guidance, seeded noise

A notebook imports the modules (``from diffnb.diffusion import noise, sampling``); the names most
used are also here (``diffusion.Denoiser``, ``diffusion.sample``).
"""
from diffnb.diffusion import noise, precond, sampling
from diffnb.diffusion.noise import add_noise, karras_sigmas, sample_sigma
from diffnb.diffusion.precond import Denoiser, coefficients
from diffnb.diffusion.sampling import Trajectory, sample, sample_seeds

__all__ = ["noise", "precond", "sampling", "add_noise", "karras_sigmas", "sample_sigma", "Denoiser",
           "coefficients", "Trajectory", "sample", "sample_seeds"]
