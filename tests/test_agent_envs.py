"""Synthetic tool-use environments: generation over four domains x six languages, the pass check, the
reference solver, the solvability filter (deliberately unsolvable and ambiguous tasks are dropped), the
LLM-driven proposer, task files for SFT, and the `kexa agent envs` interface."""

import copy
import json
from collections import Counter

import pytest

from kexa.agent.client import ScriptedClient
from kexa.agent.cli import main
from kexa.agent.domains import DOMAINS, LANGS
from kexa.agent.envs import Environment, TaskError, check_task, generate, load_tasks, screen, solve, verify
from kexa.agent.llm_envs import LLMProposer
from kexa.tokenizer.chat import render


@pytest.fixture(scope="module")
def made():
    return generate(24, seed=3)


def test_generation_is_balanced_deterministic_and_solvable(made):
    tasks, counts, dialogues = made
    assert Counter(t["domain"] for t in tasks) == {d: 6 for d in DOMAINS}
    assert Counter(t["lang"] for t in tasks) == {lang: 4 for lang in LANGS}
    assert counts["kept"] == 24 and counts["drawn"] == 24 + counts["unsolvable"] + counts["ambiguous"]
    assert len({t["id"] for t in tasks}) == 24
    for t in tasks:
        assert {"id", "domain", "lang", "tools", "instruction", "check"} <= t.keys()
        assert [s["function"]["name"] for s in t["tools"]] == [f.__name__ for f in DOMAINS[t["domain"]].tools]
        assert "db" not in json.dumps(t["tools"])  # the bound connection is not the model's business
    assert verify(tasks) == {"pass_rate": 1.0, "n": 24, "failed": []}
    again, _, _ = generate(24, seed=3)
    assert again == tasks


def test_check_needs_the_change_and_nothing_else(made):
    tasks, _, _ = made
    book = next(t for t in tasks if t["domain"] == "travel")
    passed, answer, _ = solve(book)
    assert passed
    env = Environment(book)
    assert not env.check(answer)  # nothing booked yet
    right = book["check"]["state"][0]["expected"][-1]
    box = env.toolbox()
    box.call("book_ticket", {"train_id": right[0], "passenger": right[1]})
    assert env.check("")
    other = next(t[0] for t in book["state"]["trains"] if t[0] != right[0])
    box.call("book_ticket", {"train_id": other, "passenger": right[1]})
    assert not env.check("")  # an extra booking is a side effect: fail

    spent = next(t for t in tasks if t["type"] == "spent")
    total = spent["check"]["answer"]["numbers"][0]
    env = Environment(spent)
    assert check_task(spent, env.db, f"It comes to {total:,.2f} in total.")
    assert not check_task(spent, env.db, f"It comes to {total + 1:g}.")


def test_filter_drops_unsolvable_and_ambiguous_tasks(made):
    tasks, _, _ = made
    lib = next(t for t in tasks if t["domain"] == "library")
    assert screen(lib)[0] == "ok"
    # deliberately unsolvable: the requested book has no free copy (the criterion still asks for a loan)
    broken = copy.deepcopy(lib)
    wanted = broken["check"]["state"][0]["expected"]
    book_id = next(b[0] for b in broken["state"]["books"]
                   if b[2] == broken["goal"]["author"] and b[3] == broken["goal"]["year"])
    for b in broken["state"]["books"]:
        if b[0] == book_id:
            b[4] = 0
    assert [book_id, broken["goal"]["member"]] in wanted
    assert screen(broken) == ("unsolvable", None)
    # deliberately unsolvable: the check expects a train that does not exist
    trip = copy.deepcopy(next(t for t in tasks if t["domain"] == "travel"))
    trip["check"]["state"][0]["expected"][-1][0] = "T-000"
    assert screen(trip) == ("unsolvable", None)
    # ambiguous: a second, equally cheap train on the same route and times
    trip = copy.deepcopy(next(t for t in tasks if t["domain"] == "travel"))
    best = next(t for t in trip["state"]["trains"] if t[0] == trip["check"]["state"][0]["expected"][-1][0])
    trip["state"]["trains"].append(["T-999"] + best[1:])
    assert screen(trip) == ("ambiguous", None)
    # ambiguous: a check that doing nothing already meets
    cal = copy.deepcopy(next(t for t in tasks if t["domain"] == "calendar"))
    cal["check"]["state"][0]["expected"] = sorted(cal["state"]["events"])
    assert screen(cal) == ("ambiguous", None)


def test_solver_dialogues_are_tool_use_sft_data(made):
    tasks, _, dialogues = made
    for t, d in zip(tasks, dialogues):
        text = render(d, t["tools"])
        assert text.startswith("<|tool_declare|>") and "<tool_call>" in text and "<tool_result>" in text
        assert d[-1]["role"] == "assistant" and not d[-1].get("tool_calls")


def test_llm_proposer_shares_schema_checker_and_filter():
    replies = iter(["not a scenario at all", "{\"type\": \"book\", \"state\": {\"trains\": [[1, 2]]}, \"goal\": {}}"])

    def model(messages, tools):
        prompt = messages[-1]["content"]
        example = json.loads(prompt[prompt.index("{", prompt.index("like this example")):])
        reply = next(replies, None)
        return {"content": reply if reply is not None else json.dumps(example, ensure_ascii=False)}

    tasks, counts, _ = generate(4, seed=1, propose=LLMProposer(ScriptedClient(model)))
    assert counts["invalid"] == 2 and counts["kept"] == 4
    assert {t["source"] for t in tasks} == {"llm"} and verify(tasks)["pass_rate"] == 1.0


def test_cli_envs_and_verify(tmp_path, capsys):
    assert main(["envs", "--out", str(tmp_path / "e"), "--n", "8", "--seed", "5"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 8 and (tmp_path / "e" / "sft.jsonl").exists()
    assert len(load_tasks(tmp_path / "e" / "tasks.jsonl")) == 8
    assert main(["envs", "--verify", str(tmp_path / "e")]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["pass_rate"] == 1.0 and last["n"] == 8
    # a corrupted task file: one clear line, exit 2
    lines = (tmp_path / "e" / "tasks.jsonl").read_text().splitlines()
    (tmp_path / "e" / "tasks.jsonl").write_text(lines[0] + "\n{\"id\": 1}\n")
    assert main(["envs", "--verify", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tasks.jsonl:2: missing fields" in err
    with pytest.raises(TaskError, match="not valid JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n")
        load_tasks(tmp_path / "bad.jsonl")


def test_run_with_collection_summarizes_and_replays(made, tmp_path, capsys):
    from kexa.agent.builtin import Collection
    from kexa.agent.cli import run_tasks
    from kexa.agent.loop import AgentConfig

    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"id": "faq", "title": "Shop FAQ", "text": "Refunds take 5 days. " * 80}) + "\n")
    tasks, _, dialogues = made
    task = next(t for t in tasks if t["type"] == "spent")
    (tmp_path / "tasks.jsonl").write_text(json.dumps(task, ensure_ascii=False) + "\n")
    solver_turns = iter([m for m in dialogues[tasks.index(task)] if m["role"] == "assistant"])

    def policy(messages, tools):
        if messages[0]["content"].startswith("You are the summarizer"):
            return {"content": "Refunds take 5 days."}
        if len(messages) == 2:  # first turn: read the FAQ (a long page), then act as the reference solver did
            return {"tool_calls": [{"function": {"name": "open", "arguments": {"doc_id": "faq", "query": "refunds"}}}]}
        turn = next(solver_turns)
        return {"content": turn["content"], "tool_calls": turn.get("tool_calls") or []}

    summary = run_tasks(ScriptedClient(policy), [task], tmp_path / "run", AgentConfig(summarize_over=50),
                        Collection.from_jsonl(pages))
    assert summary["pass_rate"] == 1.0 and summary["summaries"] == 1 and summary["steps_mean"] == 2
    assert main(["replay", "--run", str(tmp_path / "run"), "--tasks", str(tmp_path / "tasks.jsonl"),
                 "--collection", str(pages)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"n": 1, "identical": 1}
    assert main(["run", "--endpoint", "http://127.0.0.1:9", "--tasks", str(tmp_path / "tasks.jsonl"), "--out",
                 str(tmp_path / "x"), "--collection", str(tmp_path / "missing.jsonl")]) == 2
    assert "--collection" in capsys.readouterr().err
    assert {t["split"] for t in tasks} == {"train", "heldout"}
