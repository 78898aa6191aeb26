"""Diffusion transformer: full spatiotemporal self-attention over latent tokens with 3-D RoPE and AdaLN-single."""
