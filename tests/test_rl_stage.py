"""`kexa rl` end to end on a tiny model: rollout log-probs equal the training forward's, the router stays frozen,
off-policy steps carry truncated IS weights, truncation rules, zero-variance filtering, bitwise resume after
SIGTERM (rollout RNG included), and one-line errors for a bad recipe or an unreachable judge."""

import json
import random
import os
import signal

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.train import rl_stage
from kexa.infer.engine import Engine
from kexa.infer.sampling import SamplingParams
from kexa.train.loop import IGNORE
from kexa.train.rl import token_logprobs
from kexa.train.rl_stage import EngineRollouts, RLBatches, load_rl_recipe, main, rl
from sft_fixtures import AddTask, make_tokenizer

RECIPE = """
[data]
grad_accum = 1

[optim]
name = "adamw"
lr = 2e-3
weight_decay = 0.0

[schedule]
warmup = 0.0
decay = 0.0

[train]
steps = 4
dtype = "fp32"
threads = 1
eval_every = 0
plot = false

[rl]
prompts_per_rollout = 2
group_size = 4
steps_per_rollout = 2
clip = 2.0
max_response_tokens = 8
reasoning_ratio = 0.5
eval_n = 1
eval_langs = ["en"]
eval_max_new_tokens = 4

[[source]]
name = "lead"
task = "lead"
langs = ["en", "ko"]
"""


class LeadDigit(AddTask):
    """The add task's prompts; reward 1 when the reply (after an opening <think>) starts with a digit — a
    random tiny model earns it about half the time, so groups have reward variance."""

    name = "lead"

    def reward(self, ex, text: str) -> float:
        return float(text.removeprefix("<think>\n")[:1].isdigit())


class Constant(AddTask):
    name = "const"

    def reward(self, ex, text: str) -> float:
        return 1.0


@pytest.fixture(autouse=True)
def fixture_tasks(monkeypatch):
    monkeypatch.setattr(rl_stage, "resolve_task", lambda name: {"lead": LeadDigit(), "const": Constant()}[name])


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    d = tmp_path_factory.mktemp("start")
    tok = make_tokenizer(d)
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size))
    # a random model's next-token distribution is near uniform over 700 tokens, so it almost never ends its
    # turn; point <|endofturn|>'s output row along the mean final hidden state (over random contexts), for a logit near 5:
    # replies end within a few tokens, some escape truncation
    with torch.no_grad():
        h = model(torch.randint(0, tok.vocab_size, (4, 64)), return_hidden=True).hidden_states  # (4, 64, C)
        mean = h.mean((0, 1))  # (C,)
        model.lm_head.weight[tok.eos_id] = 5.0 * mean / mean.square().sum()
    model.train()
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    (d / "rl.toml").write_text(RECIPE)
    return d


def rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def batches_for(start, overrides=()):
    from kexa.tokenizer import Tokenizer
    rr = load_rl_recipe(start / "rl.toml", list(overrides))
    model = KExaone.from_pretrained(start / "model")
    source = RLBatches(rr, Tokenizer.from_pretrained(start / "model"), {"lead": LeadDigit()}, EngineRollouts(model), seed=0)
    return model, source


def test_rollout_logprobs_equal_the_training_forward_fp32(start):
    model, source = batches_for(start, ["rl.max_response_tokens=12", "rl.prompts_per_rollout=3"])
    model.train()
    prompts = [p for p in source.sample_prompts() for _ in range(4)]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=0)
    out = source.rollouts.generate([p.ids for p in prompts], params)  # one engine call, μ's log-probs recorded
    assert model.training and all(len(t) == len(lp) == 12 for t, lp in zip(out.token_ids, out.logprobs))
    x, y, inputs = source.collate(list(range(12)), prompts, out, torch.zeros(12))  # what the loss will see
    mask = y != IGNORE
    with torch.no_grad():
        logp = token_logprobs(model(x, compute_mtp=False).logits, y.clamp_min(0))
    assert int(mask.sum()) == 12 * 12
    gap = (logp - inputs["rollout_logp"])[mask].abs()
    assert gap.max() <= 1e-5, gap.max()
    assert torch.equal(y[mask], torch.tensor([t for r in out.token_ids for t in r]))


def test_a_rollout_batch_is_one_generation_split_into_the_steps_micro_batches(start):
    model, source = batches_for(start, ["data.grad_accum=2"])
    calls = []
    generate = source.rollouts.generate
    source.rollouts.generate = lambda prompts, params: calls.append(len(prompts)) or generate(prompts, params)
    batches = source.rollout()
    assert calls == [8] and len(batches) == 2 * 2  # P x G = 8 rows in one call; K = 2 steps x 2 micro-batches
    cur = source.current
    kept = cur["train_rows"]
    assert kept == round((1 - cur["filtered_frac"]) * 8)
    assert sum(int((y != IGNORE).any(1).sum()) for _, y, _ in batches) == kept


def test_rl_trains_with_the_router_frozen_and_logs_the_contract_metrics(tmp_path, start):
    run = tmp_path / "run"
    assert main(["--config", str(start / "rl.toml"), "--init-from", str(start / "model"), "--run-dir", str(run),
                 "--quiet"]) == 0
    ms = rows(run)
    assert [m["step"] for m in ms] == [1, 2, 3, 4] and [m["rollout"] for m in ms] == [1, 1, 2, 2]
    keys = {"reward_mean", "reward/lead", "accuracy", "accuracy/lead", "filtered_frac", "adv_abs_mean", "is_weight_mean",
            "is_truncated_frac", "response_len", "rollout_tok_per_s", "update_tok_per_s", "truncated_frac"}
    assert all(keys <= set(m) for m in ms) and "eval/accuracy/reasoning" in ms[-1]
    assert ms[0]["train_rows"] > 0 and ms[0]["update_tokens"] > 0
    for first, second in ((ms[0], ms[1]), (ms[2], ms[3])):
        if first["train_rows"]:
            # the first step of a rollout batch is on-policy (π_θ = μ: weight 1); the second is off-policy
            assert abs(first["log_ratio_mean"]) < 1e-5 and abs(first["is_weight_mean"] - 1) < 1e-5
            assert abs(second["log_ratio_mean"]) > 1e-4 and second["is_weight_mean"] != 1.0
        else:  # every group filtered: nothing to weigh
            assert first["is_weight_mean"] is None and first["loss"] == 0.0
    before, after = KExaone.from_pretrained(start / "model"), KExaone.from_pretrained(run / "model")
    b, a = before.state_dict(), after.state_dict()
    router = [k for k in b if k.endswith("gate.weight") or k.endswith("e_score_correction_bias")]
    assert router and all(torch.equal(b[k], a[k]) for k in router)  # router weights and expert biases unchanged
    assert not torch.equal(b["lm_head.weight"], a["lm_head.weight"])  # the rest trained
    report = json.loads((run / "rl_eval.json").read_text())
    assert set(report) == {"before", "after"} and "| lead |" in (run / "rl_report.md").read_text()


def test_sigterm_then_resume_equals_the_uninterrupted_run_bitwise(tmp_path, start):
    rr = load_rl_recipe(start / "rl.toml", ["rl.eval_n=0"])
    straight = rl(rr, tmp_path / "straight", start / "model", quiet=True)

    def stop_at_1(m):  # in the middle of the first rollout batch: its second half must come from the checkpoint
        if m["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    killed = rl(rr, tmp_path / "killed", start / "model", quiet=True, on_step=stop_at_1)
    assert straight.step == 4 and killed.interrupted == "SIGTERM" and killed.step == 1
    resumed = rl(rr, tmp_path / "killed", start / "model", resume=True, quiet=True)
    assert resumed.step == 4
    keys = ("loss", "reward_mean", "is_weight_mean", "grad_norm", "adv_abs_mean", "response_len")
    assert [[m[k] for k in keys] for m in rows(tmp_path / "killed")] == [[m[k] for k in keys] for m in rows(tmp_path / "straight")]
    with pytest.raises(Exception, match=r"\[rl\]"):  # the rollouts may not change under a resumed run
        rl(load_rl_recipe(start / "rl.toml", ["rl.eval_n=0", "rl.group_size=3"]), tmp_path / "killed", start / "model",
           resume=True, quiet=True)


@pytest.mark.parametrize("rule", ["zero", "mask"])
def test_truncation_rule(start, rule):
    model, source = batches_for(start, [f"rl.truncation={rule}", "rl.max_response_tokens=2"])
    batches = source.rollout()
    cur = source.current
    assert cur["truncated_frac"] > 0.5  # two tokens rarely end a reply
    if rule == "zero":  # cut replies earn 0: a batch of only cut replies carries no signal
        assert cur["reward_mean"] <= 1 - cur["truncated_frac"]
    else:  # cut replies stay out of the loss: no label comes from them
        cut_rows = round(cur["truncated_frac"] * cur["rollout_rows"])
        assert cur["train_rows"] <= cur["rollout_rows"] - cut_rows
        assert sum(int((y != IGNORE).any(1).sum()) for _, y, _ in batches) == cur["train_rows"]


def test_all_groups_filtered_leave_the_model_unchanged(tmp_path, start):
    rr = load_rl_recipe(start / "rl.toml", ["rl.eval_n=0", "train.steps=2", "rl.truncation=mask"])
    rr.sources[0].task = "const"  # every reward 1 (cut replies too: "mask"): every group has zero variance
    rl(rr, tmp_path / "run", start / "model", quiet=True)
    ms = rows(tmp_path / "run")
    assert all(m["filtered_frac"] == 1.0 and m["loss"] == 0.0 and m["grad_norm"] == 0.0 for m in ms)
    a, b = KExaone.from_pretrained(tmp_path / "run" / "model").state_dict(), KExaone.from_pretrained(start / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_recipe_and_unreachable_judge_give_one_clear_line(tmp_path, start, capsys):
    def run(*extra):
        code = main(["--config", str(start / "rl.toml"), "--init-from", str(start / "model"), "--run-dir",
                     str(tmp_path / "r"), "--quiet", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith("kexa rl: error:") and "\n" not in err, err
        return err

    assert "group_size must be an integer >= 2" in run("--set", "rl.group_size=1")
    assert "truncation must be one of" in run("--set", "rl.truncation=drop")
    assert "freeze_router" in run("--set", "balance.freeze_router=false")
    assert "unknown key(s) ['beta']" in run("--set", "rl.beta=0.1")
    assert "judge at http://127.0.0.1:9/v1 unreachable" in run("--judge-url", "http://127.0.0.1:9/v1",
                                                              "--set", "judge.retries=0", "--set", "judge.timeout_s=2")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_shipped_rl_recipes_parse():
    for name in ("rl_tiny", "rl_nano"):
        rr = load_rl_recipe(f"configs/{name}.toml")
        assert rr.recipe.balance.freeze_router and rr.rl.temperature == 1.0 and rr.rl.top_p == 0.95


def test_rewards_combine_the_verifier_with_weighted_trl_rewards_and_read_after_the_opened_think(start):
    from kexa.train.rl_stage import Prompt, score
    from kexa.rewards import format_reward
    task = AddTask()
    ex = task.sample(random.Random(0))
    prompts = [Prompt("add", task, ex, True, [1]), Prompt("add", task, ex, True, [1]), Prompt("add", task, ex, False, [1])]
    texts = [f"{ex.answer}", f"thinking\n</think>\n\n{ex.answer}", f"{ex.answer}"]
    rewards, accuracy = score(prompts, texts, {}, {"task": 1.0})
    assert accuracy == [0.0, 1.0, 1.0]  # reasoning mode: an unclosed think block holds no answer
    rewards, accuracy = score(prompts, texts, {"format": format_reward}, {"task": 1.0, "format": 0.5})
    assert accuracy == [0.0, 1.0, 1.0] and rewards == [0.0, 1.5, 1.5]


def test_engine_logprobs_need_plain_decoding(start):
    from kexa.infer.engine import GenerationError
    model = KExaone.from_pretrained(start / "model")
    with pytest.raises(GenerationError, match="plain decoding"):
        Engine(model).generate([[1, 2]], SamplingParams(max_new_tokens=2), speculative=1, logprobs=True)
