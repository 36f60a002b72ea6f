"""plasticity-ray: the plasticity-loss protocol of "Can Scale Save Us From Plasticity Loss in Large
Language Models?" on Ray, from a laptop to a GPU cluster."""

__version__ = "0.1.0"
