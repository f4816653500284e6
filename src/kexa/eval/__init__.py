"""kexa.eval: evaluation. `harness.py` runs the suites (`suites/`: mcq, math, code, ifeval, mrcr, translation,
safety) over one client (`kexa.client`: in-process engine or OpenAI-compatible endpoint); `safety/` is the
K-AUT-style taxonomy, instance generator and judges; `lm_eval_kexa.py` the lm-evaluation-harness model `kexa`;
`niah.py` the needle-in-a-haystack sweep (the context-extension gate); `humaneval.py` HumanEval scoring.
docs/evaluation.md.

    from kexa.eval import NiahConfig, evaluate_niah
    result = evaluate_niah(model, tokenizer, NiahConfig(lengths=[512, 2048]), haystack)
    result["accuracy"]       # {"512": 1.0, "2048": 0.9}
"""

from .niah import NiahConfig, evaluate_niah, haystack_from_shards, haystack_from_text, plot_heatmap

__all__ = ["NiahConfig", "evaluate_niah", "haystack_from_shards", "haystack_from_text", "plot_heatmap"]
