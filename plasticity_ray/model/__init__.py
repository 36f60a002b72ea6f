"""The GPT model and the paper's model sizes."""

from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.model.sizes import PAPER_SIZES, ModelSize, paper_lr, resolve_size

__all__ = ["GPT", "GPTConfig", "PAPER_SIZES", "ModelSize", "paper_lr", "resolve_size"]
