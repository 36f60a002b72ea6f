"""Sweeps over sizes, learning rates and seeds, and the result tables of an experiment."""
