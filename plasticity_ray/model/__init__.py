"""The GPT model (gpt.py, torch) and the paper's model sizes (sizes.py, no torch: the spec and the
analysis read sizes without importing torch)."""
