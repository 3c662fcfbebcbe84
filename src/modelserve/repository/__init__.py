"""The model repository: which models exist, their versions, files and config.yaml."""

from modelserve.repository.config import ModelConfig, Platform, TensorConfig
from modelserve.repository.layout import ModelRepository, ModelSource

__all__ = ["ModelConfig", "ModelRepository", "ModelSource", "Platform", "TensorConfig"]
