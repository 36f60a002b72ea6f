"""Training: the recipe (optimizer, warm-up, one step function shared with probes), checkpoints,
metrics, the Ray Train worker loop and its launcher."""
