"""`kexa sft` end to end on a tiny model: outputs (metrics, HF model folder with the chat template,
evaluation report, plot), bitwise resume after SIGTERM, LoRA merged into the export, one-line errors."""

import json
import os
import signal

import pytest
import torch

from kexa import KExaone
from kexa.tokenizer import Tokenizer, render
from kexa.train import sft as sft_mod
from kexa.train.sft import load_sft_recipe, main, sft
from tiny import save_tiny_model
from sft_fixtures import AddTask, make_tokenizer

RECIPE = """
[data]
seq_len = 64
batch_size = 4

[optim]
lr = 3e-3

[schedule]
warmup = 0.0
decay = 0.5

[balance]
gamma = 1e-3
alpha = 1e-4

[train]
steps = 6
dtype = "fp32"
threads = 1
eval_every = 3
save_every = 0
plot = false

[sft]
reasoning_ratio = 0.5
buffer = 32
heldout_batches = 1
eval_n = 1
eval_langs = ["en", "ko"]
eval_max_new_tokens = 8

[[source]]
name = "add"
task = "add"
langs = ["en", "ko"]
tiers = [1, 2]
"""


@pytest.fixture(autouse=True)
def fixture_task(monkeypatch):
    monkeypatch.setattr(sft_mod, "resolve_task", lambda name: AddTask())


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    d = tmp_path_factory.mktemp("start")
    tok = make_tokenizer(d)
    save_tiny_model(tok, d / "model")
    (d / "sft.toml").write_text(RECIPE)
    return d


def losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_writes_metrics_model_with_chat_template_eval_report_and_plot(tmp_path, start):
    run = tmp_path / "run"
    assert main(["--config", str(start / "sft.toml"), "--init-from", str(start / "model"), "--run-dir", str(run),
                 "--quiet", "--set", "train.plot=true"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["loss"] < rows[0]["loss"]
    assert all(r["stage"] == "sft" and 0 < r["target_tokens"] < r["tokens"] for r in rows)
    for r in (rows[2], rows[5]):  # the evaluation cadence: held-out loss, accuracy and compliance in both modes
        assert "val_loss/add" in r and {"eval/accuracy/reasoning", "eval/compliance/non_reasoning"} <= set(r)
    report = json.loads((run / "sft_eval.json").read_text())
    assert set(report["before"]["accuracy"]) == {"reasoning", "non_reasoning"}
    assert set(report["after"]["accuracy"]["reasoning"]["add"]) == {"en", "ko"}
    assert report["skipped_conversations"] == 0 and report["after"]["samples"]
    assert (run / "training.png").exists()
    md = (run / "sft_report.md").read_text()
    assert "| accuracy | before reasoning | before non-reasoning | after reasoning | after non-reasoning |" in md
    assert "| add |" in md and "| compliant |" in md and "Sample chats (after)" in md
    model = KExaone.from_pretrained(run / "model")
    assert not torch.equal(model.lm_head.weight, KExaone.from_pretrained(start / "model").lm_head.weight)
    # the exported tokenizer renders the K-EXAONE format through transformers' apply_chat_template
    from transformers import AutoTokenizer
    auto = AutoTokenizer.from_pretrained(str(run / "model"))
    chat = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5", "reasoning_content": "2 plus 3 is 5."}]
    for thinking in (True, False):
        want = render(chat, enable_thinking=thinking)
        assert auto.apply_chat_template(chat, tokenize=False, enable_thinking=thinking) == want
    assert Tokenizer.from_pretrained(run / "model").encode("What is 2 + 3?") == make_tokenizer(tmp_path).encode("What is 2 + 3?")


def test_sigterm_then_resume_equals_the_uninterrupted_run_bitwise(tmp_path, start):
    sr = load_sft_recipe(start / "sft.toml")
    straight = sft(sr, tmp_path / "straight", start / "model", quiet=True)
    assert straight.step == 6

    def stop_at_2(m):
        if m["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler: finish the step, save, return

    killed = sft(sr, tmp_path / "killed", start / "model", quiet=True, on_step=stop_at_2)
    assert killed.interrupted == "SIGTERM" and killed.step == 2
    resumed = sft(sr, tmp_path / "killed", start / "model", resume=True, quiet=True)
    assert resumed.step == 6
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")  # bitwise, evaluations in between
    a = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()[-1])
    assert a["val_loss"] == b["val_loss"] and a["eval/accuracy/reasoning"] == b["eval/accuracy/reasoning"]
    with pytest.raises(Exception, match=r"\[sft\]"):  # the data may not change under a resumed run
        sft(load_sft_recipe(start / "sft.toml", ["sft.reasoning_ratio=0.9"]), tmp_path / "killed", start / "model",
            resume=True, quiet=True)


def test_lora_sft_trains_adapters_only_and_exports_a_merged_model(tmp_path, start):
    sr = load_sft_recipe(start / "sft.toml", ["lora.rank=4", "lora.alpha=8", "train.steps=3", "train.eval_every=0",
                                              "sft.eval_langs=['en']", "sft.eval_max_new_tokens=4"])

    def stop_at_1(m):
        if m["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    assert sft(sr, tmp_path / "lora", start / "model", quiet=True, on_step=stop_at_1).interrupted == "SIGTERM"
    res = sft(sr, tmp_path / "lora", start / "model", resume=True, quiet=True)  # resumes with its adapters
    assert res.step == 3 and "eval/compliance/reasoning" in res.history[-1]  # the engine runs the adapted model
    before, after = KExaone.from_pretrained(start / "model"), KExaone.from_pretrained(tmp_path / "lora" / "model")
    assert torch.equal(before.model.embed_tokens.weight, after.model.embed_tokens.weight)  # frozen base
    q0, q1 = before.model.layers[0].self_attn.q_proj.weight, after.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q0, q1)  # the adapter update is merged into the exported weight


def test_bad_inputs_give_one_clear_line(tmp_path, start, capsys):
    def run(*extra, init=start / "model", config=start / "sft.toml"):
        rc = main(["--config", str(config), "--init-from", str(init), "--run-dir", str(tmp_path / "r"), "--quiet",
                   "--set", "sft.eval_n=0", "--set", "train.steps=2", *extra])
        return rc, capsys.readouterr().err

    rc, err = run("--set", "data.seq_len=32", "--set", "sft.reasoning_ratio=1.0")
    assert rc == 1 and err.startswith("kexa sft: error: task add (") and "does not fit" in err and err.count("\n") == 1
    rc, err = run("--set", "data.seq_len=32", "--set", "sft.reasoning_ratio=1.0", "--skip-bad")
    assert rc == 0, err
    report = json.loads((tmp_path / "r" / "sft_eval.json").read_text())
    assert report["skipped_conversations"] > 0
    rc, err = run(init=tmp_path)
    assert rc == 1 and "not a model folder" in err and err.count("\n") == 1
    (tmp_path / "bad.toml").write_text("[sft]\nreasoning_ratio = 0.5\n")
    rc, err = run(config=tmp_path / "bad.toml")
    assert rc == 1 and "at least one [[source]]" in err
    (tmp_path / "bad2.toml").write_text('[[source]]\nname = "x"\n')
    rc, err = run(config=tmp_path / "bad2.toml")
    assert rc == 1 and "exactly one of task" in err
    rc, err = run("--set", "sft.reasoning_ratio=2")
    assert rc == 1 and "reasoning_ratio must lie in [0, 1]" in err


def test_user_files_train_and_bad_rows_are_named_or_counted(tmp_path, start, capsys):
    pytest.importorskip("kexa.data.conversations")  # the tasks branch's loader (TRL conventions)
    good = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": str(i + 1)}]} for i in range(6)]
    good += [{"prompt": "What is 7 + 7?", "completion": "14"},
             {"messages": [{"role": "user", "content": "2 + 2?"},
                           {"role": "assistant", "content": "4", "reasoning_content": "2 plus 2 is 4."}]}]
    bad = good + [{"messages": [{"role": "bot", "content": "hi"}]}, "{broken json",
                  {"messages": [{"role": "user", "content": "9 " * 300}, {"role": "assistant", "content": "9"}]}]
    for name, rows in (("good.jsonl", good), ("bad.jsonl", bad)):
        (tmp_path / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    (tmp_path / "files.toml").write_text(RECIPE.replace('task = "add"', f'file = "{tmp_path / "good.jsonl"}"')
                                         .replace('langs = ["en", "ko"]\ntiers = [1, 2]\n', ""))

    def run(config, run_dir, *extra):
        rc = main(["--config", str(config), "--init-from", str(start / "model"), "--run-dir", str(tmp_path / run_dir),
                   "--quiet", "--set", "sft.eval_n=0", "--set", "train.steps=2", *extra])
        return rc, capsys.readouterr().err

    rc, err = run(tmp_path / "files.toml", "good")
    assert rc == 0, err
    assert [json.loads(x)["step"] for x in (tmp_path / "good" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    rc, err = run(tmp_path / "files.toml", "epochs", "--set", "sft.epochs=2", "--set", "data.batch_size=1")
    assert rc == 0, err
    steps = [json.loads(x)["step"] for x in (tmp_path / "epochs" / "metrics.jsonl").read_text().splitlines()]
    # the run stops at the first step by which 2 x 8 file conversations have been served
    sr = load_sft_recipe(tmp_path / "files.toml", ["data.batch_size=1"])
    stream = sft_mod.build_data(sr, Tokenizer.from_pretrained(start / "model"), heldout=False).batches
    served = [len(stream.next_rows(1)[0]) for _ in range(len(steps))]
    assert sum(served) >= 16 > sum(served[:-1]) and steps == list(range(1, len(steps) + 1)), (steps, served)
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text((tmp_path / "files.toml").read_text().replace("good.jsonl", "bad.jsonl"))
    rc, err = run(bad_cfg, "bad1")
    assert rc == 1 and f"{tmp_path / 'bad.jsonl'}:9" in err and "bot" in err and err.count("\n") == 1, err
    rc, err = run(bad_cfg, "bad2", "--skip-bad")
    assert rc == 0, err
    assert json.loads((tmp_path / "bad2" / "sft_eval.json").read_text())["skipped_conversations"] == 3


def test_shipped_sft_recipes_parse():
    for name in ("sft_tiny", "sft_nano"):
        sr = load_sft_recipe(f"configs/{name}.toml")
        assert sr.sources and all(s.task for s in sr.sources) and sr.lora is None
        assert sr.recipe.balance.gamma > 0 and sr.recipe.balance.alpha > 0 and sr.recipe.balance.mtp_weight > 0
    assert load_sft_recipe("configs/sft_tiny.toml", ["lora.rank=8"]).lora.rank == 8
