"""`kexa preference` (GROUPER stage) end to end on a tiny random model: outputs and logged parts, frozen router,
zero-variance groups skipped, bitwise resume after SIGTERM, malformed judge output counted, clear errors; the
preference rewards (template, kexa.tasks constraints, domain routing) and the shipped prompt sets / rubrics."""

import json
import os
import signal

import pytest
import torch

from kexa import KExaone
from kexa import rewards as R
from kexa.data.prompts import BUILTIN, RUBRICS, LANGS, PromptError, load_prompts, task_prompt
from kexa.train.balance import routers
from kexa.train.preference import load_preference_recipe, main, preference
from tiny import save_tiny_model
from sft_fixtures import make_tokenizer

RECIPE = """
[optim]
name = "adamw"
lr = 1e-2
[schedule]
warmup = 0.0
decay = 0.0
[train]
steps = 2
dtype = "fp32"
threads = 1
save_every = 0
plot = false
[preference]
prompts_per_step = 3
group_size = 3
max_new_tokens = 6
eval_n = 0
eval_before = false
eval_langs = ["en"]
eval_max_new_tokens = 4
[[source]]
name = "chat"
file = "builtin:chat"
[[source]]
name = "safety"
file = "builtin:safety"
[[source]]
name = "instruct"
task = "instruct"
langs = ["en", "ko"]
[[reward]]
name = "template"
[[reward]]
name = "length"
min_chars = 3
max_chars = 12
domains = ["chat", "safety"]
[[reward]]
name = "task"
[[reward]]
name = "safety"
"""
COMPACT_RUBRIC = {"name": "compact", "dimensions": {"helpfulness": "Does it help?"}, "low": 1, "high": 3}


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    d = tmp_path_factory.mktemp("start")
    tok = make_tokenizer(d)
    save_tiny_model(tok, d / "model")
    (d / "pref.toml").write_text(RECIPE)
    (d / "rubric.json").write_text(json.dumps(COMPACT_RUBRIC))
    return d


def lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage_logs_every_part_keeps_the_router_frozen_and_evaluates_before_and_after(tmp_path, start):
    run = tmp_path / "run"
    judge = ["judge.kind=local", "judge.model=init"] + [f"judge.rubrics.{d}={start / 'rubric.json'}"
                                                        for d in ("chat", "safety", "instruct")]
    (start / "judged.toml").write_text(RECIPE + '[[reward]]\nname = "judge"\nweight = 0.5\n')
    assert main(["--config", str(start / "judged.toml"), "--init-from", str(start / "model"), "--run-dir", str(run),
                 "--quiet", "--set", "preference.eval_n=1", "--set", "preference.eval_before=true",
                 "--set", "preference.eval_tasks=['instruct']", *sum((["--set", s] for s in judge), [])]) == 0
    rows = lines(run)
    assert [r["step"] for r in rows] == [1, 2] and all(r["stage"] == "preference" for r in rows)
    for r in rows:
        assert {"loss", "skipped_frac", "response_len", "score_mean", "truncated_frac"} <= set(r)
        assert {"reward/template", "reward/length", "reward/task", "reward/safety", "reward/judge"} <= set(r)
        assert r["judge/scored"] == 9  # 3 prompts x 3 responses, each through its domain's local rubric judge
        assert any(k.startswith("score_mean/") for k in r) and any(k.startswith("score_spread/") for k in r)
        assert 0 < r["response_len"] <= 6
        if r["skipped_frac"] < 1:
            assert 0 < r["inv_ppl/worst"] <= 1 and 0 < r["inv_ppl/best"] <= 1
    assert {"eval/rule_score", "eval/reward/template", "eval/accuracy/non_reasoning", "eval/judge_score"} <= set(rows[-1])
    assert 0 <= rows[-1]["eval/win_rate_vs_input"] <= 1  # the same rubric on the input model's held-out replies
    report = json.loads((run / "preference_eval.json").read_text())
    assert set(report["before"]["metrics"]) | {"eval/win_rate_vs_input"} == set(report["after"]["metrics"])
    assert report["after"]["samples"] and len(report["before"]["judge_scores"]) == len(report["after"]["judge_scores"])
    assert "eval/over_refusal" in report["after"]["metrics"]  # the held-out safety set has benign look-alikes
    gain = report["rule_gain"]  # paired over the same held-out prompts
    assert len(report["before"]["rule_scores"]) == len(report["after"]["rule_scores"]) == gain["n"]
    assert gain["gain"] == pytest.approx(report["after"]["metrics"]["eval/rule_score"]
                                         - report["before"]["metrics"]["eval/rule_score"])
    assert gain["interval"][0] <= gain["gain"] <= gain["interval"][1]
    before, after = KExaone.from_pretrained(start / "model"), KExaone.from_pretrained(run / "model")
    for a, b in zip(routers(before), routers(after)):
        assert torch.equal(a.weight, b.weight)  # the router is frozen ...
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)  # ... the rest learns
    assert (run / "model" / "tokenizer.json").exists()


def test_zero_variance_groups_are_skipped_logged_and_change_nothing(tmp_path, start):
    # a reward every response gets in full: all groups have equal scores
    (start / "flat.toml").write_text(RECIPE.split("[[reward]]")[0] + '[[reward]]\nname = "length"\nmin_chars = 0\n'
                                     'max_chars = 100000\n')
    pr = load_preference_recipe(start / "flat.toml")
    result = preference(pr, tmp_path / "flat", start / "model", quiet=True)
    assert all(r["skipped_frac"] == 1.0 and r["skipped_groups"] == 3 and r["loss"] == 0.0 for r in result.history)
    before, after = KExaone.from_pretrained(start / "model"), KExaone.from_pretrained(tmp_path / "flat" / "model")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_sigterm_then_resume_equals_the_uninterrupted_run_bitwise(tmp_path, start):
    pr = load_preference_recipe(start / "pref.toml", ["train.steps=4"])
    straight = preference(pr, tmp_path / "straight", start / "model", quiet=True)

    def stop_at_2(m):
        if m["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler: finish the step, save, return

    killed = preference(pr, tmp_path / "killed", start / "model", quiet=True, on_step=stop_at_2)
    assert killed.interrupted == "SIGTERM" and killed.step == 2
    assert preference(pr, tmp_path / "killed", start / "model", resume=True, quiet=True).step == 4
    timing = {"step_s", "tok_per_s"}
    a = [{k: v for k, v in r.items() if k not in timing} for r in lines(tmp_path / "straight")]
    b = [{k: v for k, v in r.items() if k not in timing} for r in lines(tmp_path / "killed")]
    assert a == b and any(r["skipped_frac"] < 1 for r in a)  # bitwise: losses, scores, rewards, lengths
    assert straight.step == 4
    with pytest.raises(Exception, match=r"\[preference\]"):  # the sampling may not change under a resumed run
        preference(load_preference_recipe(start / "pref.toml", ["train.steps=4", "preference.group_size=4"]),
                   tmp_path / "killed", start / "model", resume=True, quiet=True)


def test_malformed_judge_output_falls_back_to_the_rule_rewards_and_is_counted(tmp_path, start, monkeypatch):
    replies = iter(["OK"] + ["helpfulness: 3", "no score here", "I think it is quite good"] * 100)
    monkeypatch.setattr(R.JudgeClient, "complete", lambda self, content: next(replies))
    (start / "endpoint.toml").write_text(RECIPE + '[[reward]]\nname = "judge"\n[judge]\nkind = "endpoint"\n'
                                         'base_url = "http://127.0.0.1:9/v1"\nmodel = "judge"\nparse_retries = 0\n'
                                         f'concurrency = 1\nrubrics = {{chat = "{start / "rubric.json"}", '
                                         f'safety = "{start / "rubric.json"}", instruct = "{start / "rubric.json"}"}}\n')
    result = preference(load_preference_recipe(start / "endpoint.toml"), tmp_path / "run", start / "model", quiet=True)
    malformed = sum(r["judge/malformed"] for r in result.history)
    scored = sum(r["judge/scored"] for r in result.history)
    assert malformed == 12 and scored == 6  # 2 steps x 9 replies: every third judge reply parses
    assert all(r["reward/judge"] == 1.0 for r in result.history)  # parsed scores only (3 on 1..3); None skipped
    assert result.step == 2 and (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("override, message", [
    (["reward.0.name=charm"], "unknown reward 'charm'"),
    (["data.grad_accum=2"], "grad_accum must be 1"),
    (["balance.freeze_router=false"], "keeps the router frozen"),
    (["preference.group_size=1"], "group_size must be an integer >= 2"),
    (["judge.kind=local"], "needs that reward"),
])
def test_bad_recipes_are_one_clear_line(tmp_path, start, capsys, override, message):
    toml = RECIPE.replace('[[reward]]\nname = "template"', '[[reward]]\nname = "charm"') \
        if override[0].startswith("reward") else RECIPE
    (tmp_path / "r.toml").write_text(toml)
    args = [] if override[0].startswith("reward") else ["--set", override[0]]
    assert main(["--config", str(tmp_path / "r.toml"), "--init-from", str(start / "model"), "--run-dir",
                 str(tmp_path / "run"), "--quiet", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kexa preference: error:") and message in err and "\n" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unreachable_judge_and_bad_prompt_file_are_one_clear_line(tmp_path, start, capsys):
    (tmp_path / "j.toml").write_text(RECIPE + '[[reward]]\nname = "judge"\n[judge]\nkind = "endpoint"\n'
                                     'base_url = "http://127.0.0.1:9/v1"\nmodel = "m"\nretries = 0\ntimeout_s = 2\n')
    assert main(["--config", str(tmp_path / "j.toml"), "--init-from", str(start / "model"), "--run-dir",
                 str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "judge at http://127.0.0.1:9/v1" in err and "\n" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"prompt": "x", "language": "fr"}\n')
    (tmp_path / "p.toml").write_text(RECIPE.replace('file = "builtin:chat"', f'file = "{bad}"'))
    assert main(["--config", str(tmp_path / "p.toml"), "--init-from", str(start / "model"), "--run-dir",
                 str(tmp_path / "run2"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert f"{bad}:2: language 'fr'" in err and "\n" not in err


# ---------------------------------------------------------------------------- rewards and data
def test_win_rate_counts_ties_half_and_skips_unscored():
    from kexa.train.preference import win_rate
    assert win_rate([0.9, 0.5, 0.1, None], [0.1, 0.5, 0.9, 0.3]) == 0.5
    assert win_rate([0.9, 0.8], [0.1, None]) == 1.0 and win_rate([None], [0.2]) is None


def test_template_task_and_domain_rewards():
    import random

    import kexa.tasks
    eot = "<|endofturn|>"
    assert R.template_reward(["q"] * 3, [f"Hello.{eot}", "Hello.", f"<think>\nx\n</think>\n\nHi{eot}"],
                             enable_thinking=[False, False, False]) == [1.0, 0.0, 0.0]
    task = kexa.tasks.get("instruct")
    ex = task.sample(random.Random(1), "en", 1)
    row = task_prompt(task, ex, "instruct")
    good, bad = f"{ex.answer}{eot}", f"{task.corrupt(ex, random.Random(0))}{eot}"
    assert R.task_reward([row.messages] * 3, [good, bad, good], task=["instruct", "instruct", None],
                         example=[ex, ex, None]) == [1.0, 0.0, None]
    fn = R.only_domains(R.length_reward(1, 5), ["chat"])
    assert fn(["a", "b"], ["abc", "abcdefgh"], domain=["chat", "tool"]) == [1.0, None]

    class Fixed:
        def __init__(self, value):
            self.value, self.rubric = value, R.Rubric(name="fixed")

        def score(self, question, reply):
            return R.JudgeScore(self.value, None, "", 1)

    judge = R.rubric_reward({"chat": Fixed(0.25), "safety": Fixed(0.75)}, concurrency=1)
    assert judge(["a", "b", "c"], ["x", "y", "z"], domain=["safety", "tool", "chat"]) == [0.75, None, 0.25]


def test_prompt_sets_cover_six_languages_and_rubrics_load():
    assert {"chat", "creative", "safety"} <= set(BUILTIN) and {"chat", "instruct", "tool", "creative", "safety"} <= set(RUBRICS)
    for domain in BUILTIN:
        rows = load_prompts(f"builtin:{domain}", domain)
        for lang in LANGS:
            mine = [r for r in rows if r.language == lang]
            assert len(mine) >= 3 and {r.split for r in mine} == {"train", "heldout"}
            # each prompt is written in the language it declares (lingua)
            assert all(R.detect_language(r.messages[-1]["content"]) == lang for r in mine), (domain, lang)
            if domain == "safety":  # harmful prompts beside benign look-alikes, in both splits
                assert {(r.should_refuse, r.split) for r in mine} == {(a, b) for a in (True, False)
                                                                        for b in ("train", "heldout")}
    for path in RUBRICS.values():
        assert len(R.Rubric.load(path).dimensions) >= 3
    with pytest.raises(PromptError, match="no built-in prompt set 'nope'"):
        load_prompts("builtin:nope", "x")
