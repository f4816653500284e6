"""kexa: the K-EXAONE system (236B-A23B MoE) in PyTorch — model, tokenizer, training, inference."""

from .config import ConfigError, ModelConfig
from .model.transformer import KExaone, ModelOutput

__all__ = ["ConfigError", "KExaone", "ModelConfig", "ModelOutput"]
__version__ = "0.1.0"
