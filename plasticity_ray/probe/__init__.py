"""Probing plasticity: train a copy of a checkpoint on the held-out probe language and measure how
fast its validation loss falls (AUC)."""
