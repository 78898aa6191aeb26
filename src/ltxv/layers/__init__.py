"""Model-agnostic building blocks: attention, RoPE, norms, embeddings (no diffusion knowledge)."""
