"""The tiny model folder many tests start from: seeded random weights sized to a tokenizer, plus that tokenizer."""

from pathlib import Path

import torch

from kexa import KExaone, ModelConfig


def save_tiny_model(tok, folder, seed: int = 0, **overrides) -> Path:
    """Write `ModelConfig.preset("tiny")` (vocabulary = the tokenizer's, plus `overrides`) with weights drawn
    after torch.manual_seed(seed), and the tokenizer, into `folder`."""
    torch.manual_seed(seed)
    KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size, **overrides)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
