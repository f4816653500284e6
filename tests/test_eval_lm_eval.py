"""The lm-eval adapter (`kexa` model) against lm-eval's own `hf` backend on the same exported tiny model and
a local task file: same accuracy, per-choice log-likelihoods within 1e-4 in fp32; rolling log-likelihood
(perplexity task) equal too; generate_until stops at `until`; the chat template is K-EXAONE's."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub read it at import: no network waits
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from kexa import KExaone, ModelConfig  # noqa: E402
from kexa.tokenizer import train_bpe  # noqa: E402

ROWS = [("The sky is", ["blue", "green", "loud"], 0), ("Two plus two is", ["four", "five", "seven"], 0),
        ("Seoul is in", ["Korea", "Spain", "Peru"], 0), ("Cats say", ["meow", "moo", "quack"], 0),
        ("Fire is", ["hot", "cold", "wet"], 0), ("The quick brown", ["fox", "dog", "cat"], 0)]
TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""
PPL = """task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    corpus = " ".join(q + " " + " ".join(c) for q, c, _ in ROWS) + " the lazy dog jumps over.\n"
    (root / "c.txt").write_text(corpus * 40, "utf-8")
    tok = train_bpe([str(root / "c.txt")], vocab_size=400)
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size, max_position_embeddings=64))
    folder = root / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    tasks = root / "tasks"
    tasks.mkdir()
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": [" " + x for x in c], "label": a}) + "\n"
                            for q, c, a in ROWS), "utf-8")
    (tasks / "tiny_mc.yaml").write_text(TASK.format(data=data), "utf-8")
    ppl = root / "ppl.jsonl"  # one text longer than the context: several rolling windows
    ppl.write_text(json.dumps({"text": (corpus.strip() + " ") * 3}) + "\n" + json.dumps({"text": "Fire is hot."}) + "\n")
    (tasks / "tiny_ppl.yaml").write_text(PPL.format(data=ppl), "utf-8")
    return folder, tasks


def _evaluate(model, folder, tasks, names):
    import kexa.eval.lm_eval_kexa  # noqa: F401 — registers "kexa"
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    args = f"pretrained={folder},dtype=float32"
    return simple_evaluate(model=model, model_args=args, tasks=names, task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                           log_samples=True, batch_size=1, device="cpu")


def test_kexa_equals_hf_backend(setup):
    folder, tasks = setup
    ours = _evaluate("kexa", folder, tasks, ["tiny_mc", "tiny_ppl"])
    ref = _evaluate("hf", folder, tasks, ["tiny_mc", "tiny_ppl"])
    assert ours["results"]["tiny_mc"]["acc,none"] == ref["results"]["tiny_mc"]["acc,none"]
    lls = [[r[0] for r in s["filtered_resps"]] for s in ours["samples"]["tiny_mc"]]
    want = [[r[0] for r in s["filtered_resps"]] for s in ref["samples"]["tiny_mc"]]
    assert len(lls) == len(ROWS)
    assert torch.allclose(torch.tensor(lls, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), atol=1e-4)
    assert len({round(x, 3) for row in lls for x in row}) > len(ROWS)  # not a constant: real scores were compared
    p_ours = [s["filtered_resps"][0] for s in ours["samples"]["tiny_ppl"]]
    p_ref = [s["filtered_resps"][0] for s in ref["samples"]["tiny_ppl"]]
    assert p_ours == pytest.approx(p_ref, abs=1e-3)


def test_generate_until_and_chat_template(setup):
    import kexa.eval.lm_eval_kexa as adapter
    from lm_eval.api.instance import Instance
    from kexa.tokenizer.chat import render
    folder, _ = setup
    lm = adapter.KexaLM(pretrained=str(folder))
    req = Instance("generate_until", {}, ("The sky is", {"until": ["\n"], "max_gen_toks": 8}), 0)
    (text,) = lm.generate_until([req])
    assert "\n" not in text
    ids = lm.client.engine.generate([lm.tok_encode("The sky is")], __import__("kexa").infer.SamplingParams(
        max_new_tokens=8, temperature=0.0, stop_token_ids=(lm.eot_token_id,))).token_ids[0]
    assert text == lm.kexa_tokenizer.decode(ids, skip_special_tokens=True).split("\n", 1)[0]  # greedy, cut at until
    chat = [{"role": "user", "content": "hi"}]
    assert lm.apply_chat_template(chat) == render(chat, enable_thinking=True, add_generation_prompt=True)
    assert adapter.KexaLM(pretrained=str(folder), enable_thinking="false").apply_chat_template(chat) == \
        render(chat, enable_thinking=False, add_generation_prompt=True)
