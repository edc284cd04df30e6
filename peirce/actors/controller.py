"""Controller actor: one RL run's orchestrator inside the cluster, so several runs (the
three specialists of stage A, the two domain-RL runs of stage C) share one Ray cluster
and its resources concurrently. The driver only waits and watches metrics files."""

from __future__ import annotations

from typing import Any

import ray


class Controller:
    def __init__(self, cfg_dict: dict[str, Any], resume: bool) -> None:
        from peirce.actors.common import apply_env_defaults

        apply_env_defaults()
        self.cfg_dict = cfg_dict
        self.resume = resume

    def run(self) -> dict[str, Any]:
        import logging

        from peirce.config import TrainConfig
        from peirce.trainer.orchestrator import Orchestrator

        logging.basicConfig(level=logging.INFO)
        cfg = TrainConfig.model_validate(self.cfg_dict)
        return Orchestrator(cfg, resume=self.resume, progress=False).run()


ControllerActor = ray.remote(num_cpus=0)(Controller)
