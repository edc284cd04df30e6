"""Local models: the embedded SmolLM2 checkpoint, tiny test models, folder inspection.

Importing this package is cheap (no torch, no vllm): the heavy libraries are imported
inside the functions that need them.
"""

from peirce.model.embedded import EmbeddedModelError, embedded_model_dir, prepare_embedded_model, status
from peirce.model.loading import ModelFolderError, ModelInfo, open_vllm, read_model_info, vllm_cpu_kwargs
from peirce.model.tiny import build_tiny_llama, tiny_model_dir

__all__ = [
    "EmbeddedModelError",
    "ModelFolderError",
    "ModelInfo",
    "build_tiny_llama",
    "embedded_model_dir",
    "open_vllm",
    "prepare_embedded_model",
    "read_model_info",
    "status",
    "tiny_model_dir",
    "vllm_cpu_kwargs",
]
