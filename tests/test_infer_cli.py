"""`kexa generate` / `kexa chat` end to end on a tiny model folder with its tokenizer saved beside:
JSON contract, agreement with the engine, exit code 2 on bad input, Ctrl-C, chat turns."""

import io
import json
import subprocess
import sys

import pytest

from kexa import KExaone
from kexa.cli import main as kexa_main
from kexa.infer import Engine, SamplingParams
from kexa.infer.chat import ReplyPrinter, chat_loop
from kexa.tokenizer import Tokenizer, train_bpe
from tiny import save_tiny_model

TEXT = "the quick brown fox jumps over the lazy dog. 안녕하세요 세계. " * 100


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_model")
    (d / "corpus.txt").write_text(TEXT + "\n", "utf-8")
    tok = train_bpe([str(d / "corpus.txt")], vocab_size=420)
    save_tiny_model(tok, d)
    return d


def run_generate(capsys, *args):
    code = kexa_main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("spec", [[], ["--speculative", "2"]])
def test_generate_json_matches_engine(folder, capsys, spec):
    code, out, _ = run_generate(capsys, "--model", folder, "--prompt", "the quick brown", "--max-new-tokens", 12,
                                "--temperature", 0, "--json", *spec)
    assert code == 0
    res = json.loads(out.strip().splitlines()[-1])
    tok = Tokenizer.from_pretrained(folder)
    model = KExaone.from_pretrained(folder)
    want = Engine(model).generate([tok.encode("the quick brown")],
                                  SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=(53,))).token_ids[0]
    assert res["token_ids"] == want and res["text"] == tok.decode(want)
    assert res["new_tokens"] == len(want) and res["prompt_tokens"] == len(tok.encode("the quick brown"))
    assert res["tokens_per_s"] > 0
    if spec:
        assert 0 <= res["acceptance_rate"] <= 1 and len(res["acceptance_per_position"]) == 2
    else:
        assert res["acceptance_rate"] is None


def test_generate_streams_text_and_chat_prompt(folder, capsys):
    code, out, err = run_generate(capsys, "--model", folder, "--prompt", "hello", "--max-new-tokens", 5,
                                  "--seed", 1, "--chat", "--no-think", "--top-k", 20, "--dtype", "bfloat16")
    assert code == 0 and "tokens" in err and "tok/s" in err


@pytest.mark.parametrize("args, msg", [
    (["--prompt", ""], "empty"),
    (["--prompt", "x", "--temperature", "-1"], "temperature"),
    (["--prompt", "x", "--top-p", "0"], "top_p"),
    (["--prompt", "x", "--max-new-tokens", "0"], "max_new_tokens"),
    (["--prompt", "x", "--speculative", "3"], "1 or 2"),
    (["--prompt", "the lazy dog " * 3000], "max_position_embeddings"),
])
def test_generate_bad_input_exits_2(folder, capsys, args, msg):
    code, out, err = run_generate(capsys, "--model", folder, *args, "--json")
    assert code == 2 and msg in err and out == ""


def test_generate_rejects_a_folder_that_is_not_a_model(tmp_path, folder, capsys):
    code, _, err = run_generate(capsys, "--model", tmp_path / "missing", "--prompt", "x")
    assert code == 2 and "not a directory" in err
    Tokenizer.from_pretrained(folder).save_pretrained(tmp_path)  # tokenizer but no config.json
    code, _, err = run_generate(capsys, "--model", tmp_path, "--prompt", "x")
    assert code == 2 and "config.json" in err
    code, _, err = run_generate(capsys, "--model", folder, "--tokenizer", tmp_path / "none", "--prompt", "x")
    assert code == 2 and "tokenizer.json" in err


def test_generate_ctrl_c_stops_cleanly(folder, capsys, monkeypatch):
    import kexa.infer.engine as engine

    real = engine.Engine._emit
    calls = []

    def interrupt_on_third(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(engine.Engine, "_emit", staticmethod(interrupt_on_third))
    code, out, _ = run_generate(capsys, "--model", folder, "--prompt", "the", "--max-new-tokens", 50,
                                "--temperature", 0, "--json")
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 130 and res["interrupted"] and res["finish_reason"] == "interrupted"
    assert len(res["token_ids"]) == 2  # what was generated before Ctrl-C is kept


def test_generate_subprocess_last_line_is_json(folder):
    proc = subprocess.run([sys.executable, "-m", "kexa.cli", "generate", "--model", str(folder), "--prompt", "fox",
                           "--max-new-tokens", "4", "--temperature", "0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout.strip().splitlines()[-1])) >= {"text", "token_ids", "tokens_per_s",
                                                                     "acceptance_rate"}


def test_chat_loop_turns_commands_and_history(folder):
    tok = Tokenizer.from_pretrained(folder)
    engine = Engine(KExaone.from_pretrained(folder))
    lines = iter(["hello there", "/think off", "/think maybe", "second question", "/exit"])
    out = io.StringIO()
    params = SamplingParams(max_new_tokens=6, temperature=0, stop_token_ids=(tok.eos_id,))
    history = chat_loop(engine, tok, params, 1, True, "be brief", read=lambda _: next(lines), out=out)
    text = out.getvalue()
    assert "[thinking]" in text and "(reasoning off)" in text and "usage: /think" in text
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    # an unfinished thought (no </think> within 6 tokens) is kept as reasoning, not shown as answer
    assert history[2]["content"] == "" and history[2].get("reasoning_content")


def test_reply_printer_separates_thinking_from_answer():
    out = io.StringIO()
    printer = ReplyPrinter(out, thinking=True)
    for piece in ["let me th", "ink</th", "ink>\n\nThe ans", "wer.<|endofturn|>"]:
        printer.feed(piece)
    printer.close()
    assert out.getvalue() == "[thinking]\nlet me think\n[answer]\nThe answer.\n"
