"""Model sizes of the paper's Table I, parameter counting, and the learning-rate rule of Table II.

A size is named either as in Table I ("5M" ... "314M") or as ``L{layers}-d{hidden}`` for a custom
model (e.g. ``L2-d128``). The attention-head dimension is always 64, as in the paper.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

HEAD_DIM = 64
PAPER_VOCAB_SIZE = 151_680  # Qwen3 tokenizer, as the embedding table of every Table I model
PAPER_CONTEXT = 2_048

# Appendix A: the best LRs of the grid search at the two ends, interpolated as a power law in d.
LR_ANCHOR = 3e-3  # best LR of the 5M model (d = 320)
LR_ANCHOR_HIDDEN = 320
LR_EXPONENT = math.log(1 / 3) / math.log(1 / 4)  # alpha = log(eta_314M/eta_5M) / log(d_5M/d_314M)

_CUSTOM_NAME = re.compile(r"^L(\d+)-d(\d+)$")


@dataclass(frozen=True)
class ModelSize:
    name: str
    layers: int
    hidden: int

    @property
    def heads(self) -> int:
        return self.hidden // HEAD_DIM

    @property
    def non_embedding_params(self) -> int:
        """Everything but the token and position embeddings (Table I's "Eff. Params")."""
        d = self.hidden
        # Per block: 2 LayerNorms (2d each), qkv (3d^2 + 3d), attention out (d^2 + d),
        # MLP up (4d^2 + 4d), MLP down (4d^2 + d). Plus the final LayerNorm (2d).
        per_block = 12 * d * d + 13 * d
        return self.layers * per_block + 2 * d

    @property
    def fourier_non_embedding_params(self) -> int:
        """The same with deep Fourier features: the MLP's up projection makes 2d pre-activations
        (2d^2 + 2d parameters) instead of 4d."""
        return self.non_embedding_params - self.layers * (2 * self.hidden * self.hidden + 2 * self.hidden)

    def activation_norm_params(self, fourier: bool = False) -> int:
        """What `model.normalize_activations` adds: per block a LayerNorm (gain and bias) on the MLP's
        pre-activations (4d of them, 2d with Fourier features) and one each on queries and keys (64 wide)."""
        pre_activations = 2 * self.hidden if fourier else 4 * self.hidden
        return self.layers * (2 * pre_activations + 4 * HEAD_DIM)

    def total_params(self, vocab_size: int = PAPER_VOCAB_SIZE, context: int = PAPER_CONTEXT) -> int:
        """Non-embedding parameters plus one tied token table and the position table."""
        return self.non_embedding_params + (vocab_size + context) * self.hidden

    def flops_per_token(self, vocab_size: int, seq_len: int) -> int:
        """Training FLOPs (forward and backward) per token, the PaLM/nanoGPT count: 6·(non-embedding
        parameters + the output head's vocab·hidden) + 12·layers·hidden·seq_len for attention.
        A forward pass alone is a third of it."""
        return 6 * (self.non_embedding_params + vocab_size * self.hidden) + 12 * self.layers * self.hidden * seq_len

    @property
    def paper_lr(self) -> float:
        return paper_lr(self.hidden)


def paper_lr(hidden: int) -> float:
    """Appendix A: eta(d) = 3e-3 * (320 / d) ** 0.79248."""
    return LR_ANCHOR * (LR_ANCHOR_HIDDEN / hidden) ** LR_EXPONENT


PAPER_SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in (
        ModelSize("5M", 4, 320),
        ModelSize("12M", 5, 448),
        ModelSize("27M", 7, 576),
        ModelSize("39M", 8, 640),
        ModelSize("53M", 9, 704),
        ModelSize("83M", 10, 832),
        ModelSize("106M", 11, 896),
        ModelSize("314M", 16, 1280),
    )
}


def resolve_size(name: str) -> ModelSize:
    """Table I name or ``L{layers}-d{hidden}``; raises ValueError with the accepted forms."""
    if name in PAPER_SIZES:
        return PAPER_SIZES[name]
    match = _CUSTOM_NAME.match(name)
    if not match:
        known = ", ".join(PAPER_SIZES)
        raise ValueError(f"unknown size {name!r}: use one of {known}, or L<layers>-d<hidden> such as L2-d128")
    layers, hidden = int(match.group(1)), int(match.group(2))
    if layers < 1:
        raise ValueError(f"size {name!r}: needs at least one layer")
    if hidden < HEAD_DIM or hidden % HEAD_DIM:
        raise ValueError(f"size {name!r}: hidden must be a positive multiple of the head dimension {HEAD_DIM}")
    return ModelSize(name, layers, hidden)


def size_table() -> list[dict]:
    """One row per Table I size, as `plasticity-ray sizes` prints it."""
    return [
        {
            "name": s.name,
            "layers": s.layers,
            "hidden": s.hidden,
            "heads": s.heads,
            "non_embedding_params": s.non_embedding_params,
            "fourier_non_embedding_params": s.fourier_non_embedding_params,
            "total_params": s.total_params(),
            "lr": s.paper_lr,
        }
        for s in PAPER_SIZES.values()
    ]


def format_size_table() -> str:
    """Table I and the LR rule as `plasticity-ray sizes` prints them."""
    lines = [f"{'name':>6} {'layers':>6} {'hidden':>6} {'heads':>5} {'non-embedding':>15} {'total':>13} {'lr':>9} "
             f"{'fourier non-emb.':>16}"]
    lines += [f"{r['name']:>6} {r['layers']:>6} {r['hidden']:>6} {r['heads']:>5} "
              f"{r['non_embedding_params']:>15,} {r['total_params']:>13,} {r['lr']:>9.3g} "
              f"{r['fourier_non_embedding_params']:>16,}" for r in size_table()]
    lines.append("total = non-embedding + tied token table (151,680 rows) + 2,048 positions; lr = 3e-3·(320/d)^0.79248")
    lines.append("fourier non-emb. = non-embedding with model.activation: fourier (the MLP's up projection halved)")
    return "\n".join(lines)
