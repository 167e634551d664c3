"""Training a face0 model under accelerate: the loop, EMA, checkpoints, validation."""
