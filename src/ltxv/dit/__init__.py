"""Diffusion transformer: full spatiotemporal attention over latent tokens, 3-D RoPE, AdaLN-single."""
