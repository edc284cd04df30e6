"""Stage B: merge specialist models with mergekit (linear, task_arithmetic, ties).

Importing this package is cheap: mergekit and torch load only when a merge runs.
"""

from peirce.merge.config import METHODS, REFERENCE_WEIGHTS, MergeConfig, parse_merge_config
from peirce.merge.merge import MergeError, build_mergekit_config, check_model_folder, run_merge

__all__ = [
    "METHODS",
    "REFERENCE_WEIGHTS",
    "MergeConfig",
    "MergeError",
    "build_mergekit_config",
    "check_model_folder",
    "parse_merge_config",
    "run_merge",
]
