"""kexa.eval: evaluation tasks. Needle-in-a-haystack first (the context-extension gate).

    from kexa.eval import NiahConfig, evaluate_niah
    result = evaluate_niah(model, tokenizer, NiahConfig(lengths=[512, 2048]), haystack)
    result["accuracy"]       # {"512": 1.0, "2048": 0.9}
"""

from .niah import NiahConfig, evaluate_niah, haystack_from_shards, haystack_from_text, plot_heatmap

__all__ = ["NiahConfig", "evaluate_niah", "haystack_from_shards", "haystack_from_text", "plot_heatmap"]
