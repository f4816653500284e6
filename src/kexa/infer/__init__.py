"""kexa.infer: KV cache, sampling, the generation engine, MTP self-speculative decoding, CLI.

    from kexa.infer import Engine, SamplingParams
    Engine(model).generate([[5, 6, 7]], SamplingParams(max_new_tokens=16, temperature=0)).token_ids
"""

from .cache import KVCache, full_attention_cache_bytes
from .engine import Engine, Generation, GenerationError, GenerationResult, GenerationStats, StepOutput
from .sampling import SamplingParams, sample, token_probs

__all__ = ["KVCache", "full_attention_cache_bytes", "Engine", "Generation", "GenerationError", "GenerationResult",
           "GenerationStats", "StepOutput", "SamplingParams", "sample", "token_probs"]
