"""Causal Video-VAE (32x32x8 pixels -> one latent token) with a timestep-conditioned denoising decoder."""
