"""Table I and Table II, typed from the paper, against the code and the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plasticity_ray.cli import main
from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.model.sizes import resolve_size
from plasticity_ray.model.sizes import LR_EXPONENT, PAPER_CONTEXT, PAPER_VOCAB_SIZE

# Table I: name, layers, hidden, heads, non-embedding ("Eff.") params, total params.
TABLE_I = [
    ("5M", 4, 320, 5, 4_932_480, 54_125_440),
    ("12M", 5, 448, 7, 12_072_256, 80_942_400),
    ("27M", 7, 576, 9, 27_922_752, 116_470_080),
    ("39M", 8, 640, 10, 39_389_440, 137_775_360),
    ("53M", 9, 704, 11, 53_610_304, 161_834_816),
    ("83M", 10, 832, 13, 83_176_704, 211_078_400),
    ("106M", 11, 896, 14, 106_101_632, 243_841_920),
    ("314M", 16, 1280, 20, 314_841_600, 511_613_440),
]
# Table II, interpolation column: eta x 1e3.
TABLE_II_LR_E3 = {"5M": 3.00, "12M": 2.30, "27M": 1.88, "39M": 1.73, "53M": 1.61, "83M": 1.41, "106M": 1.33, "314M": 1.00}


def _check_rows(rows):
    assert [r["name"] for r in rows] == [t[0] for t in TABLE_I]
    for row, (name, layers, hidden, heads, non_emb, total) in zip(rows, TABLE_I):
        assert set(row) == {"name", "layers", "hidden", "heads", "non_embedding_params", "fourier_non_embedding_params",
                            "total_params", "lr"}
        # Fourier features: each block's up projection d → 2d instead of d → 4d (weights and biases).
        assert row["fourier_non_embedding_params"] == non_emb - layers * (2 * hidden * hidden + 2 * hidden)
        assert (row["layers"], row["hidden"], row["heads"]) == (layers, hidden, heads)
        assert row["non_embedding_params"] == non_emb
        assert row["total_params"] == total
        assert float(f"{row['lr'] * 1e3:.3g}") == pytest.approx(TABLE_II_LR_E3[name], abs=1e-9)


def test_sizes_json_matches_tables_i_and_ii(capsys):
    assert main(["sizes", "--json"]) == 0
    _check_rows(json.loads(capsys.readouterr().out))


def test_sizes_console_script_prints_the_same_json():
    script = Path(sys.executable).with_name("plasticity-ray")
    exe = str(script) if script.exists() else shutil.which("plasticity-ray")
    assert exe, "the plasticity-ray console script is not installed"
    out = subprocess.run([exe, "sizes", "--json"], check=True, capture_output=True, text=True).stdout
    _check_rows(json.loads(out))


def test_lr_exponent_is_appendix_a_alpha():
    assert LR_EXPONENT == pytest.approx(0.79248, abs=5e-6)


@pytest.mark.parametrize("name,layers,hidden,heads,non_emb,total", TABLE_I)
def test_built_model_has_table_i_parameter_counts(name, layers, hidden, heads, non_emb, total):
    cfg = GPTConfig.from_size(resolve_size(name), vocab_size=PAPER_VOCAB_SIZE, context=PAPER_CONTEXT)
    with torch.device("meta"):  # counts only: no memory, no init cost
        model = GPT(cfg)
    assert sum(p.numel() for p in model.non_embedding_parameters()) == non_emb
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.blocks[0].attn.heads == heads


def test_custom_sizes():
    size = resolve_size("L3-d192")
    assert (size.layers, size.hidden, size.heads) == (3, 192, 3)
    for bad in ("7M", "L2-d100", "L0-d64", "L2d128"):
        with pytest.raises(ValueError, match="size"):
            resolve_size(bad)
