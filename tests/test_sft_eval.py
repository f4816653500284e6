"""The task evaluator: compliance checks on reply text, and accuracy / compliance of whole runs with a
scripted engine (perfect replies score 1, wrong or malformed ones 0)."""

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.eval import tasks_eval
from kexa.eval.tasks_eval import evaluate_tasks, heldout_prompts, report_markdown, score_reply
from kexa.tokenizer.chat import encode_chat
from sft_fixtures import AddTask, make_tokenizer

EOT = "<|endofturn|>"


@pytest.mark.parametrize("text, reasoning, failed", [
    ("5 plus 2 is 7.\n</think>\n\n7" + EOT, True, set()),
    ("7" + EOT, False, set()),
    ("\n</think>\n\n7" + EOT, True, {"think_block"}),  # reasoning on: an empty think block is not compliant
    ("5 plus 2\n</think>\n\n7" + EOT, False, {"think_block"}),  # reasoning off: no think tags may follow
    ("5 plus 2 is 7.\n</think>\n\n7", True, {"ends_with_eot"}),
    ("5 plus 2 is 7, 7, 7, 7", True, {"ends_with_eot", "think_block", "parses"}),  # never closed the think block
    ("7<|user|>\nmore" + EOT, False, {"parses"}),
    ("<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>" + EOT, False, set()),
    ("<tool_call>{\"name\": add}</tool_call>" + EOT, False, {"tool_calls_json", "parses"}),
    ("<tool_call>{\"name\": \"add\"" + EOT, False, {"tool_calls_json", "parses"}),
])
def test_compliance_checks(text, reasoning, failed):
    got = score_reply(text, reasoning)
    assert {k for k, ok in got.items() if not ok} - {"compliant"} == failed
    assert got["compliant"] == (not failed)


class ScriptedEngine:
    """Replies to each held-out prompt with a given function of its example (instead of a model)."""

    reply = None  # (example, reasoning) -> text

    def __init__(self, model):
        model.eval()
        self.problems = {}

    def generate(self, prompts, params):
        class Result:
            pass
        r = Result()
        r.token_ids = [self.tok.encode(ScriptedEngine.reply(*self.lookup[tuple(p)])) for p in prompts]
        return r


def test_perfect_replies_score_one_and_wrong_ones_zero(monkeypatch, tmp_path):
    tok = make_tokenizer(tmp_path)
    tasks, langs = {"add": AddTask()}, ["en", "ko"]
    lookup = {}
    for _, _, ex in heldout_prompts(tasks, langs, 3):
        for reasoning in (True, False):
            ids = encode_chat(tok, ex.messages, enable_thinking=reasoning, add_generation_prompt=True).ids
            lookup[tuple(ids)] = (ex, reasoning)
    ScriptedEngine.tok, ScriptedEngine.lookup = tok, lookup
    monkeypatch.setattr(tasks_eval, "Engine", ScriptedEngine)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size)).train()

    ScriptedEngine.reply = staticmethod(lambda ex, r: (f"{ex.reasoning}\n</think>\n\n" if r else "") + ex.answer + EOT)
    good = evaluate_tasks(model, tok, tasks, langs, n=3)
    assert model.training  # restored
    assert good["accuracy"] == {m: {"add": {"en": 1.0, "ko": 1.0}} for m in ("reasoning", "non_reasoning")}
    assert good["compliance"] == {"reasoning": 1.0, "non_reasoning": 1.0}
    assert len(good["samples"]) == 4 and {s["lang"] for s in good["samples"]} == {"en", "ko"}

    ScriptedEngine.reply = staticmethod(lambda ex, r: str(int(ex.answer) + 1) + EOT)  # wrong, and no think in r mode
    bad = evaluate_tasks(model, tok, tasks, langs, n=3)
    assert bad["accuracy_mean"] == {"reasoning": 0.0, "non_reasoning": 0.0}
    assert bad["compliance"] == {"reasoning": 0.0, "non_reasoning": 1.0}
    md = report_markdown({"before": bad, "after": good})
    assert "| add | 0.00 | 0.00 | 1.00 | 1.00 |" in md
