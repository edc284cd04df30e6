"""Merge actor: runs one mergekit merge where the specialists' folders are (a Ray node).

Thin on purpose: validation and the merge itself live in `peirce.merge`, testable
without Ray. Errors come back as `ConfigError` (bad config) or `MergeError` (missing
folder, mergekit failure), both plain picklable exceptions with field-naming messages.
"""

from __future__ import annotations

from typing import Any

import ray

from peirce.actors.common import apply_env_defaults


class Merger:
    def __init__(self) -> None:
        apply_env_defaults()

    def merge(self, cfg_dict: dict[str, Any], out_dir: str, overwrite: bool = False) -> str:
        """Validate `cfg_dict` as a MergeConfig, merge into `out_dir`, return the folder path."""
        from peirce.merge import parse_merge_config, run_merge

        cfg = parse_merge_config(cfg_dict, source="MergeActor.merge cfg_dict")
        return str(run_merge(cfg, out_dir, overwrite=overwrite))


MergeActor = ray.remote(num_cpus=1)(Merger)
