"""Benchmarks behind `plasticity-ray bench ...`; each returns a JSON-able record with the device,
date and command, for committing under results/bench/."""
