"""The model repository: which models exist, their versions, files and config.yaml."""

from modelserve.repository.config import ModelConfig, Platform, TensorConfig
from modelserve.repository.layout import ModelRepository, ModelSource
from modelserve.repository.remote import MirroredRepository, open_repository

__all__ = [
    "MirroredRepository",
    "ModelConfig",
    "ModelRepository",
    "ModelSource",
    "Platform",
    "TensorConfig",
    "open_repository",
]
