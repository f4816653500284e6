"""End to end: `kexa agent run` against a live `kexa serve` (uvicorn on 127.0.0.1, built exactly as the CLI
builds it, from tests/test_serve.py) on a random tiny model. The model fails the tasks; the run must not
crash, must write its trajectories and summary, and every trajectory must replay event for event."""

import json

import pytest

from kexa.agent.cli import main
from test_serve import Live, _folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("agent_model"), memorise=False)


@pytest.fixture(scope="module")
def server(folder):
    srv = Live(folder)
    yield srv
    srv.close()


def test_run_against_kexa_serve_and_replay(server, tmp_path, capsys):
    assert main(["envs", "--out", str(tmp_path / "envs"), "--n", "4", "--seed", "0"]) == 0
    tasks = str(tmp_path / "envs" / "tasks.jsonl")
    run = tmp_path / "run"
    # tool_choice "required": the server writes `<tool_call>` and the random model continues with noise, so
    # every turn is a malformed call that must come back to the model as an error result
    assert main(["run", "--endpoint", server.url, "--tasks", tasks, "--out", str(run), "--limit", "2",
                 "--max-steps", "3", "--max-tokens", "24", "--compress-every", "2", "--keep-last", "1", "--sub-max-tokens", "24",
                 "--tool-choice", "required"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 2 and 0.0 <= summary["pass_rate"] <= 1.0
    assert {"pass_rate", "steps_mean", "peak_prompt_tokens", "compressions"} <= summary.keys()
    assert summary["errors"] == 0 and summary["peak_prompt_tokens"] > 100  # usage from the server, tools declared
    records = [json.loads(line) for line in (run / "trajectories.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [json.loads(line)["id"] for line in open(tasks)][:2]
    assert summary["steps_mean"] == 3 and summary["compressions"] + summary["compression_fallbacks"] == 2
    for r in records:
        assert r["finish"] == "max_steps" and not r["passed"]
        assert [e["role"] for e in r["events"] if e["type"] == "model"] == (
            ["agent"] * 2 + ["compressor"] * (1 + (r["compressions"] == 0)) + ["agent"])
        results = [e for e in r["events"] if e["type"] == "tool"]
        assert results and all(e["error"] for e in results)  # malformed calls (or bad arguments) as errors
        tool_turns = [m for m in r["messages"] if m["role"] == "tool"]
        assert tool_turns and tool_turns[-1]["content"].startswith("error: ")
    capsys.readouterr()
    assert main(["replay", "--run", str(run), "--tasks", tasks]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"n": 2, "identical": 2}
    # an unreachable endpoint: the run ends each task with finish "error", no crash
    assert main(["run", "--endpoint", "http://127.0.0.1:9", "--served-model", "x", "--tasks", tasks,
                 "--out", str(tmp_path / "down"), "--limit", "1"]) == 0
    assert json.loads((tmp_path / "down" / "summary.json").read_text())["errors"] == 1


def test_in_process_engine_client_matches_the_endpoint(server, folder, tmp_path, capsys):
    """The same greedy model through HTTP and in-process gives the same trajectory, event for event."""
    assert main(["envs", "--out", str(tmp_path / "envs"), "--n", "1", "--seed", "2"]) == 0
    tasks = str(tmp_path / "envs" / "tasks.jsonl")
    common = ["--tasks", tasks, "--max-steps", "2", "--max-tokens", "16", "--tool-choice", "required"]
    assert main(["run", "--endpoint", server.url, "--out", str(tmp_path / "http"), *common]) == 0
    assert main(["run", "--model", str(folder), "--out", str(tmp_path / "local"), *common]) == 0
    http, local = (json.loads((tmp_path / d / "trajectories.jsonl").read_text()) for d in ("http", "local"))
    strip = lambda events: [{k: v for k, v in e.items() if k != "id"} for e in events]  # noqa: E731 (call ids differ)
    for e in http["events"] + local["events"]:
        if e["type"] == "model":
            e["reply"]["message"]["tool_calls"] = [c["function"] for c in e["reply"]["message"]["tool_calls"]]
    assert strip(http["events"]) == strip(local["events"]) and http["prompt_tokens"] == local["prompt_tokens"]
    assert main(["run", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), *common]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_llm_generator_through_the_endpoint_counts_invalid_proposals(server, tmp_path, capsys):
    """A random model proposes no valid world: every draw is counted invalid, the run says so in one line."""
    code = main(["envs", "--out", str(tmp_path / "llm"), "--n", "1", "--llm", server.url, "--llm-max-tokens", "16",
                 "--max-draws", "2"])
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["invalid"] == 2
    assert "only 0 of 1 tasks" in err.strip().splitlines()[-1]
    assert (tmp_path / "llm" / "stats.json").exists()
