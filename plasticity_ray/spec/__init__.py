"""Typed experiment specs: one YAML file describes a whole experiment.

`schema` holds the typed sections (the paper's values as defaults), `problems` turns validation
errors into one line per problem naming the field, and `load` reads files, applies dotted-path
overrides and expands a sweep into its points. The names below are the package's interface.
"""

from plasticity_ray.spec.load import grid_points, load_spec, point_labels, with_overrides
from plasticity_ray.spec.problems import SpecError
from plasticity_ray.spec.schema import (
    ALL_LANGUAGES, PAPER_LANGUAGE_ORDER, ActiveForgetting, AlarmSpec, BuiltinSource, ChurnReduction, ContinualBackprop,
    DataSpec, ExperimentSpec, FilesSource, HFSource, L2Init, NormalizeAndProject, ReDo, ResetControl, ShrinkPerturb,
    SpectralRegularization, WeightClipping, parse_count, run_identity,
)

__all__ = [
    "ALL_LANGUAGES", "PAPER_LANGUAGE_ORDER", "ActiveForgetting", "AlarmSpec", "BuiltinSource", "ChurnReduction",
    "ContinualBackprop", "DataSpec", "ExperimentSpec", "FilesSource", "HFSource", "L2Init", "NormalizeAndProject", "ReDo",
    "ResetControl", "ShrinkPerturb", "SpecError", "SpectralRegularization", "WeightClipping",
    "grid_points", "load_spec", "parse_count", "point_labels", "run_identity", "with_overrides",
]
