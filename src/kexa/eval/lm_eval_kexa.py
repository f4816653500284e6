"""lm-evaluation-harness model `kexa`: a kexa model folder behind lm-eval's three-method interface.

    python -m kexa.eval.lm_eval_kexa --model kexa --model_args pretrained=runs/nano/model \\
        --tasks my_task --include_path my_tasks/ [--apply_chat_template] [--limit 100]

    import kexa.eval.lm_eval_kexa, lm_eval                      # importing registers "kexa"
    lm_eval.simple_evaluate(model="kexa", model_args="pretrained=DIR", tasks=[...])

`loglikelihood` (TemplateLM's context/continuation split, then one teacher-forced forward per request,
fp32 log-softmax: `kexa.client.EngineClient.token_loglikelihood`, shared with the harness),
`loglikelihood_rolling` (lm-eval's disjoint rolling windows, as its `hf` backend builds them),
`generate_until` (kexa's Engine; greedy unless the task asks for sampling; stops at `until` strings and
`<|endofturn|>`), and `apply_chat_template` (the K-EXAONE template; model_args `enable_thinking=false` for the
non-reasoning prompt; default on, the model's default). Model args: pretrained, dtype (float32|bfloat16),
device, max_length (default: the model's context), enable_thinking, add_bos_token.

Registration: lm-eval 0.4.13 finds models only in its own registry (no entry-point discovery), so the model
registers when this module is imported; `python -m kexa.eval.lm_eval_kexa ARGS` imports it and runs lm-eval's
own command line with ARGS. tests/test_eval_lm_eval.py checks it against lm-eval's `hf` backend on the
exported tiny model (same accuracy, log-likelihoods within 1e-4 in fp32).
"""

from __future__ import annotations

import logging

import lm_eval.models  # noqa: F401 — fills the registry with lm-eval's own models first (it loads them lazily
from lm_eval.api.model import TemplateLM  # only while the registry is empty, which registering "kexa" would end)
from lm_eval.api.registry import register_model

log = logging.getLogger(__name__)


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")


@register_model("kexa")
class KexaLM(TemplateLM):
    def __init__(self, pretrained: str, dtype: str = "float32", device: str = "cpu", max_length: int | None = None,
                 enable_thinking=True, add_bos_token=False, batch_size=1, **kwargs):
        super().__init__()
        import torch

        from kexa.client import EngineClient
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes device="cuda" unless told otherwise; its hf backend also falls back
            log.warning("kexa lm-eval model: device %r requested but CUDA is not available; using cpu", device)
            device = "cpu"
        self.client = EngineClient.from_folder(pretrained, dtype=dtype, device=device)
        self.kexa_tokenizer = self.client.tok
        self.pretrained = str(pretrained)
        self._max_length = int(max_length) if max_length else self.client.model.config.max_position_embeddings
        self.enable_thinking = _bool(enable_thinking)
        self.add_bos_token = _bool(add_bos_token)

    # ------------------------------------------------------------------ tokenisation (TemplateLM's contract)
    @property
    def eot_token_id(self) -> int:
        return self.kexa_tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context conditions on: BOS when the tokenizer has one (the hf backend's rule)."""
        bos = self.kexa_tokenizer.bos_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        ids = self.kexa_tokenizer.encode(string)
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens
        bos = self.kexa_tokenizer.bos_id
        return [bos] + ids if add and bos is not None and (not ids or ids[0] != bos) else ids

    # ------------------------------------------------------------------ the three methods
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        out = self.client.token_loglikelihood([(list(ctx), list(cont)) for _, ctx, cont in requests])
        for (key, _, _), res in zip(requests, out):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval import utils
        scores = []
        for (string,) in (r.args for r in requests):
            windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            total = sum(lp for lp, _ in self.client.token_loglikelihood([(list(c), list(x)) for c, x in windows]))
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            scores.append(total)
        return scores

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from kexa.infer.sampling import SamplingParams
        outputs = []
        for context, gen_kwargs in (r.args for r in requests):
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            do_sample = kw.pop("do_sample", False)
            temperature = float(kw.pop("temperature", 0.0)) if do_sample else 0.0
            params = SamplingParams(max_new_tokens=int(kw.pop("max_gen_toks", 256)), temperature=temperature,
                                    top_p=float(kw.pop("top_p", 1.0)) if do_sample else 1.0,
                                    stop_token_ids=(self.eot_token_id,), seed=0)
            ids = self.tok_encode(context)[-(self.max_length - params.max_new_tokens):] or [self.prefix_token_id]
            res = self.client.engine.generate([ids], params)
            text = self.kexa_tokenizer.decode(res.token_ids[0], skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop, 1)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            outputs.append(text)
        return outputs

    # ------------------------------------------------------------------ chat template
    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from kexa.tokenizer.chat import render
        return render(chat_history, enable_thinking=self.enable_thinking, add_generation_prompt=add_generation_prompt)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        from importlib import resources
        return resources.files("kexa.tokenizer").joinpath("chat_template.jinja").read_text("utf-8") \
            if chat_template else None


def main() -> None:
    """lm-eval's own command line, with the `kexa` model registered."""
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    main()
