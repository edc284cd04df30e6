"""Typed run configuration (pydantic, torch-free)."""

from peirce.config.errors import ConfigError
from peirce.config.loader import dump_config, load_config
from peirce.config.schema import TrainConfig

__all__ = ["ConfigError", "TrainConfig", "dump_config", "load_config"]
