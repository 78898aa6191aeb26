"""Training: losses, loop, checkpoints."""
