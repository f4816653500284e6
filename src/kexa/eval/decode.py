"""Decode throughput of one model: plain greedy decoding vs MTP self-speculative decoding.

Runs alternate (plain, spec k=1, spec k=2, plain, ...) so machine noise hits every variant alike;
medians over `repeats`. Greedy speculative output must equal plain greedy output token for token
(`identical` records it), so the speed-up is free of any quality change. Used by the speedrun's
evaluation stage; `benchmarks/speculative.py` is the fuller study (batches, per-position acceptance).

    python -c "from kexa import KExaone, ModelConfig; from kexa.eval.decode import decode_benchmark; \
print(decode_benchmark(KExaone(ModelConfig.preset('tiny')), [1, 2, 3], 16))"
"""

from __future__ import annotations

import statistics
import time

from ..infer.engine import Engine
from ..infer.sampling import SamplingParams


def decode_benchmark(model, prompt: list[int], new_tokens: int = 64, ks: tuple[int, ...] = (1, 2),
                     repeats: int = 3) -> dict:
    engine = Engine(model)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    variants = [0] + ([k for k in ks] if model.mtp is not None else [])
    times: dict[int, list[float]] = {k: [] for k in variants}
    outputs: dict[int, list[int]] = {}
    stats = {}
    engine.generate([prompt], SamplingParams(max_new_tokens=4, temperature=0.0))  # warm-up
    for _ in range(repeats):
        for k in variants:
            t = time.perf_counter()
            res = engine.generate([prompt], params, speculative=k)
            times[k].append(time.perf_counter() - t)
            outputs[k], stats[k] = res.token_ids[0], res.stats
    plain = statistics.median(times[0])
    out = {"new_tokens": len(outputs[0]), "plain_tokens_per_s": len(outputs[0]) / plain, "speculative": {}}
    for k in variants[1:]:
        med = statistics.median(times[k])
        out["speculative"][str(k)] = {
            "tokens_per_s": len(outputs[k]) / med, "speedup": plain / med,
            "acceptance_rate": stats[k].acceptance_rate,
            "acceptance_per_position": stats[k].acceptance_per_position,
            "mean_accepted_length": stats[k].mean_accepted_length,
            "identical_to_greedy": outputs[k] == outputs[0]}
    return out
