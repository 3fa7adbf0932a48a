"""Noise schedules, the forward process, preconditioning (the denoiser contract) and training losses."""
from noisecraft.diffusion.denoiser import Denoiser
from noisecraft.diffusion.losses import diffusion_loss, held_out_losses, mean_held_out_loss, sample_sigmas
from noisecraft.diffusion.schedules import DiscreteSchedule, q_sample

__all__ = ["Denoiser", "DiscreteSchedule", "diffusion_loss", "held_out_losses", "mean_held_out_loss", "q_sample",
           "sample_sigmas"]
