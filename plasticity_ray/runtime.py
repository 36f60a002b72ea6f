"""Connecting to Ray: the cluster named by RAY_ADDRESS when set, else a local Ray started here."""

from __future__ import annotations

import logging
import os

import ray


def init_ray() -> None:
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(logging_level=logging.WARNING)
