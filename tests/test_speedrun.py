"""The speedrun end to end at CI size: every stage through the real code path, skipping, redoing."""

import json
import pytest
import torch

from kexa import KExaone
from kexa.report import SECTIONS
from kexa.speedrun import REPO, STAGES, Context, SpeedrunConfig, final_stage, speedrun
from kexa.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("speedrun")
    cfg = SpeedrunConfig(
        REPO / "configs/tiny.toml", REPO / "configs/extend_tiny.toml",
        recipe_overrides=[f"data.cache_dir={json.dumps(str(root / 'cache'))}", "data.corpus_bytes=40000",
                          "data.vocab_size=600", "train.steps=12", "train.save_every=0", "train.eval_every=6"],
        extend_overrides=["extend.max_rounds=1", "niah.samples=1", "niah.depths=[0.0, 1.0]"],
        extend_stage_steps=[3, 2], decode_new_tokens=8, decode_repeats=1, speculative_k=(1,),
        sft=REPO / "configs/sft_quick.toml",
        sft_overrides=["train.steps=3", "sft.eval_n=1", "sft.eval_max_new_tokens=12", "train.plot=false"],
        rl_overrides=["train.steps=2", "rl.prompts_per_rollout=2", "rl.group_size=4", "rl.max_response_tokens=8",
                      "rl.eval_max_new_tokens=8", 'rl.eval_langs=["en"]'],
        preference_overrides=["train.steps=2", "preference.prompts_per_step=2", "preference.group_size=4", "preference.max_new_tokens=8",
                              "preference.eval_max_new_tokens=8"],
        eval_limit=1, eval_max_tokens=6,
        targets={"n": 1, "compliance_n": 1, "tool_n": 1, "niah_cases": 2, "max_new_tokens": 6, "outside": True},
        chat_turns=())  # the page's screenshot run is tests/test_serve_page.py's (a server start per speedrun pass)
    state = speedrun(root / "run", cfg)
    return root / "run", cfg, state


def test_every_stage_ran_and_left_valid_artefacts(run):
    rundir, _, state = run
    assert [s.name for s in STAGES] == list(state)
    assert all(s["status"] == "done" for s in state.values())
    tok = Tokenizer.from_pretrained(rundir / "model")
    assert tok.decode(tok.encode("hello 안녕")) == "hello 안녕"
    model = KExaone.from_pretrained(rundir / "model")
    transformers = pytest.importorskip("transformers")
    hf = transformers.ExaoneMoeForCausalLM.from_pretrained(rundir / "model").eval()
    x = torch.tensor([tok.encode("The quick brown fox")])
    with torch.no_grad():
        assert (hf(x).logits - model(x).logits).abs().max() < 1e-4
    report = (rundir / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in report
    ev = json.loads((rundir / "eval.json").read_text())
    assert ev["decode"]["speculative"]["1"]["identical_to_greedy"]
    assert ev["params"]["total_params"] > 0 and len(ev["expert_loads"]) == model.config.num_hidden_layers - 1
    assert "NIAH accuracy before extension" in report and "bytes/token gain" in report
    assert (rundir / "loss.png").exists() and (rundir / "balance.png").exists()


def test_targets_stage_measures_every_target_on_the_final_model(run):
    """Each target is measured in the run (a value, its threshold, met or not; intervals where counted),
    NIAH at 8x the pre-training length, the transformers check included, and the report shows them."""
    rundir, _, _ = run
    t = json.loads((rundir / "targets.json").read_text())
    rows = {r["target"]: r for r in t["targets"]}
    assert set(rows) == {"addition", "lookup", "compliance_reasoning", "compliance_non_reasoning", "tool_calls",
                         "niah", "short_loss", "rl_gain", "mtp", "outside"}
    for name, r in rows.items():
        assert isinstance(r["value"], float) and (r["met"] is None) == (name == "outside"), name
    for name in ("addition", "lookup", "tool_calls", "niah", "rl_gain", "outside"):
        lo, hi = rows[name]["interval"]
        assert lo <= rows[name]["value"] <= hi, name
    assert rows["addition"]["n"] == 6 and set(rows["lookup"]["by_lang"]) == {"ko", "en", "es", "de", "ja", "vi"}
    assert rows["niah"]["length"] == 8 * 64 and rows["niah"]["n"] >= 2  # tiny.toml pre-trains at 64 tokens
    assert len(t["details"]["outside"]["items"]) == 10 and t["settings"]["temperature"] == 1.0
    report = (rundir / "report.md").read_text()
    assert "| key-value lookup among 8 pairs" in report and "Accuracy by language" in report
    assert "(no screenshot: no chat turns configured)" in report


def test_sft_stage_starts_from_the_extended_model_and_feeds_rl(run):
    rundir, cfg, state = run
    names = [s.name for s in STAGES]
    assert names.index("extend") < names.index("sft") < names.index("evaluate")
    assert Context(rundir, cfg, state).model_before("sft") == rundir / "extend" / "model"
    assert Context(rundir, cfg, state).model_before("rl") == rundir / "sft" / "model"
    summary = state["sft"]["summary"]
    assert summary["steps"] == 3 and set(summary["accuracy_before"]) == {"reasoning", "non_reasoning"}
    x = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():  # SFT trained the extended model
        sft_logits = KExaone.from_pretrained(rundir / "sft" / "model")(x).logits
        assert not torch.equal(sft_logits, KExaone.from_pretrained(rundir / "extend" / "model")(x).logits)
    # the report's SFT section is kexa sft's own (sft_eval.json), with both columns, modes and languages
    report = (rundir / "report.md").read_text()
    sft_eval = json.loads((rundir / "sft" / "sft_eval.json").read_text())
    from kexa.eval.tasks_eval import report_markdown
    from kexa.report import SFT_TITLE
    assert report_markdown(sft_eval, SFT_TITLE) in report
    for col in ("before reasoning", "before non-reasoning", "after reasoning", "after non-reasoning"):
        assert col in report
    assert {s["lang"] for s in sft_eval["after"]["samples"]} == {"en", "ko"}
    assert "*reasoning, " in report and "*non_reasoning, " in report and "| compliant |" in report
    assert "SFT, reasoning mode: held-out task accuracy, before → after" in report


def test_rl_then_preference_each_from_the_model_before_and_preference_is_final(run):
    rundir, cfg, state = run
    names = [s.name for s in STAGES]
    assert names.index("sft") < names.index("rl") < names.index("preference") < names.index("evaluate")
    ctx = Context(rundir, cfg, state)
    assert ctx.model_before("preference") == rundir / "rl" / "model"
    assert final_stage().name == "preference"
    assert state["rl"]["summary"]["steps"] == 2 and state["preference"]["summary"]["steps"] == 2
    assert set(state["rl"]["summary"]["accuracy_before"]) == {"reasoning", "non_reasoning"}
    # RL started from the SFT model (its before-evaluation is the SFT model's), preference from the RL model
    rl_recipe = json.loads((rundir / "rl" / "rl_recipe.json").read_text())
    assert rl_recipe["rl"]["max_response_tokens"] == 8  # the overrides reached the stage
    x = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = {m: KExaone.from_pretrained(rundir / m)(x).logits
                  for m in ("model", "sft/model", "rl/model", "preference/model")}
    assert torch.equal(logits["model"], logits["preference/model"])  # RUN/model is the preference model
    # each stage trained its start: RL moved it unless AGAPO filtered every group (all rewards equal: no
    # gradient, which a tiny model with 8-token replies can give), preference likewise
    rl_rows = [json.loads(l) for l in (rundir / "rl" / "metrics.jsonl").read_text().splitlines() if '"reward_mean"' in l]
    assert len(rl_rows) == 2
    assert torch.equal(logits["rl/model"], logits["sft/model"]) == all(r["filtered_frac"] == 1.0 for r in rl_rows)
    pref_rows = [json.loads(l) for l in (rundir / "preference" / "metrics.jsonl").read_text().splitlines()
                 if '"score_mean"' in l]
    assert len(pref_rows) == 2
    assert torch.equal(logits["preference/model"], logits["rl/model"]) == all(r["skipped_frac"] == 1.0 for r in pref_rows)
    assert not torch.equal(logits["preference/model"], logits["sft/model"])  # the chain trained somewhere
    assert json.loads((rundir / "model" / "tokenizer_config.json").read_text())["chat_template"]  # what serve renders
    ev = json.loads((rundir / "eval.json").read_text())
    assert ev["final_model"] == "preference" and "final" in ev["short_context"]
    # report: RL before/after by family, per-step table + reward curve; preference scores per domain and parts
    report = (rundir / "report.md").read_text()
    from kexa.eval.tasks_eval import report_markdown
    from kexa.report import RL_TITLE
    assert report_markdown(json.loads((rundir / "rl" / "rl_eval.json").read_text()), RL_TITLE) in report
    assert "| step | reward | accuracy | filtered (zero-variance) | IS weight truncated |" in report
    assert "IS-truncated tokens" in report and "response length" in report
    assert (rundir / "rl_reward.png").exists() and "![RL reward](rl_reward.png)" in report
    pref = json.loads((rundir / "preference" / "preference_eval.json").read_text())
    assert "## Preference" in report and "| metric | before | after |" in report
    assert "| score: chat |" in report and "| part: template |" in report
    assert pref["after"]["metrics"]["eval/rule_score/chat"] is not None


def test_eval_stage_grids_every_stage_model_in_both_modes(run):
    rundir, cfg, state = run
    names = [s.name for s in STAGES]
    assert names.index("sft") < names.index("eval") < names.index("report")
    res = json.loads((rundir / "eval" / "results.json").read_text())
    assert list(res["stages"]) == ["pretrain", "extend", "sft", "rl", "preference"]  # every model-producing stage, in order
    assert res["suites"] == res["stages"]["preference"]["suites"]  # the harness's format: the final model's numbers
    settings = res["settings"]
    assert settings["modes"] == ["reasoning", "plain"] and settings["suites"] == list(cfg.eval_suites)
    assert (settings["temperature"], settings["top_p"], settings["mtp"], settings["limit"]) == (1.0, 0.95, False, 1)
    for stage, r in res["stages"].items():
        assert set(r["suites"]) == set(cfg.eval_suites)
        for suite, m in r["suites"].items():  # every item asked in both modes: scored or a counted error
            assert m["reasoning/n"] + m["reasoning/errors"] == m["plain/n"] + m["plain/errors"] > 0, (stage, suite)
        assert (rundir / "eval" / stage / "items" / "agentic.plain.jsonl").exists()
    assert state["eval"]["summary"]["models"] == ["pretrain", "extend", "sft", "rl", "preference"]
    report = (rundir / "report.md").read_text()
    from kexa.report import evaluation_section
    assert evaluation_section(res) in report
    assert "| suite | metric | pretrain reasoning | pretrain plain | extend reasoning | extend plain | " \
           "sft reasoning | sft plain | rl reasoning | rl plain | preference reasoning | preference plain |" in report
    assert "| agentic | pass_rate |" in report and "| math |" in report


def test_rerun_skips_and_corrupted_output_is_redone(run, capsys):
    rundir, cfg, state = run
    capsys.readouterr()
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert all(f"{s.name}: done" in out for s in STAGES)
    assert out.strip().splitlines()[-1].startswith(f"Chat with the model:  kexa serve --model {rundir / 'model'}")
    before = json.loads((rundir / "stages.json").read_text())["pretrain"]["wall_s"]
    (rundir / "eval.json").write_text("{broken")  # corrupt the evaluation stage's output
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert "pretrain: done" in out and "evaluate: recorded as done but its output is missing or invalid" in out
    after = json.loads((rundir / "stages.json").read_text())
    assert after["pretrain"]["wall_s"] == before
    json.loads((rundir / "eval.json").read_text())


def test_lost_sft_output_redoes_sft_and_later_stages_only(run, capsys):
    rundir, cfg, _ = run
    before = json.loads((rundir / "stages.json").read_text())
    kept, redone = ((rundir / "eval" / m / "items" / "math.plain.jsonl").stat().st_mtime_ns for m in ("extend", "sft"))
    (rundir / "sft" / "sft_eval.json").unlink()
    capsys.readouterr()
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert "extend: done" in out and "sft: recorded as done but its output is missing or invalid" in out
    assert "] evaluate: evaluation" in out and "] report: report card" in out  # the later stages' banners
    assert "] rl: RL with verifiable rewards" in out and "] preference: preference learning" in out
    after = json.loads((rundir / "stages.json").read_text())
    assert after["rl"]["wall_s"] != before["rl"]["wall_s"]
    assert after["extend"]["wall_s"] == before["extend"]["wall_s"]
    assert after["sft"]["wall_s"] != before["sft"]["wall_s"] and (rundir / "sft" / "sft_eval.json").exists()
    # the eval stage is redone; the SFT model's items belong to the new SFT model, the others are kept
    assert "] eval: evaluation suites" in out
    items = {m: (rundir / "eval" / m / "items" / "math.plain.jsonl").stat().st_mtime_ns for m in ("extend", "sft")}
    assert items["extend"] == kept and items["sft"] != redone  # extend's answers reused, sft's asked again
    made_by = json.loads((rundir / "eval" / "sft" / "model_stage.json").read_text())
    assert made_by["wall_s"] == after["sft"]["wall_s"]


def test_lost_rl_model_redoes_rl_and_preference_not_sft(run, capsys):
    rundir, cfg, _ = run
    before = json.loads((rundir / "stages.json").read_text())
    for f in (rundir / "rl" / "model").glob("*.safetensors"):
        f.write_bytes(b"broken")
    capsys.readouterr()
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert "sft: done" in out and "rl: recorded as done but its output is missing or invalid" in out
    assert "] preference: preference learning" in out
    after = json.loads((rundir / "stages.json").read_text())
    assert after["sft"]["wall_s"] == before["sft"]["wall_s"]
    assert after["rl"]["wall_s"] != before["rl"]["wall_s"] and after["preference"]["wall_s"] != before["preference"]["wall_s"]
    KExaone.from_pretrained(rundir / "rl" / "model")


def test_fresh_redoes_every_stage_including_sft(run, capsys):
    rundir, cfg, _ = run
    before = json.loads((rundir / "stages.json").read_text())
    capsys.readouterr()
    state = speedrun(rundir, cfg, fresh=True)
    out = capsys.readouterr().out
    assert not any(f"{s.name}: done" in out for s in STAGES)
    assert f"[{[s.name for s in STAGES].index('sft') + 1}/{len(STAGES)}] sft: supervised fine-tuning" in out
    assert state["sft"]["wall_s"] != before["sft"]["wall_s"]
    assert state["preference"]["wall_s"] != before["preference"]["wall_s"]
    report = (rundir / "report.md").read_text()
    assert "## SFT: held-out" in report and "## RL: held-out" in report and "## Preference" in report
