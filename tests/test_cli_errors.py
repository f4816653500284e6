"""Clean edges of the `kexa` command: every error is one line on stderr with exit code 2 (bad input)
or 1 (failure while working); arguments are checked before files are touched; a broken model folder
says what is broken; the speedrun shows unmet gates; `kexa chat` outlives its context."""

import io
import subprocess
import sys
import types

import pytest

from kexa import KExaone
from kexa.cli import main as kexa_main
from kexa.infer import Engine, SamplingParams
from kexa.infer.chat import chat_loop
from kexa.tokenizer import Tokenizer, train_bpe
from tiny import save_tiny_model

TEXT = "the quick brown fox jumps over the lazy dog. 안녕하세요 세계. " * 100


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny model with a short context (128 positions) and its tokenizer."""
    d = tmp_path_factory.mktemp("tiny_model")
    (d / "corpus.txt").write_text(TEXT + "\n", "utf-8")
    tok = train_bpe([str(d / "corpus.txt")], vocab_size=420)
    save_tiny_model(tok, d, max_position_embeddings=128)
    return d


def kexa(capsys, *args):
    code = kexa_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_info_unknown_preset_is_one_line_exit_2(capsys):
    code, out, err = kexa(capsys, "info", "--preset", "unknown")
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("kexa info: error:") and "unknown preset 'unknown'" in line and "tiny" in line


def test_info_on_a_broken_model_folder(capsys, tmp_path):
    code, _, err = kexa(capsys, "info", "--model", tmp_path)
    assert code == 2 and "no config.json" in one_line(err)
    (tmp_path / "config.json").write_text('{"hidden_size": 4,')
    code, _, err = kexa(capsys, "info", "--model", tmp_path)
    assert code == 2 and "not valid JSON" in one_line(err)


def test_tokenizer_train_bad_arguments_touch_nothing(capsys, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    out_dir = tmp_path / "tok"
    for args, msg in [(["--vocab-size", "0"], "--vocab-size 0: must exceed 384"),
                      (["--vocab-size", "1000", "--transition", "5000"], "--transition"),
                      (["--vocab-size", "1000", "--min-frequency", "0"], "--min-frequency"),
                      (["--vocab-size", "1000", "--input", tmp_path / "missing.txt"], "missing.txt")]:
        inputs = [] if "--input" in args else ["--input", corpus]
        code, _, err = kexa(capsys, "tokenizer", "train", *inputs, "--out", out_dir, *args)
        assert code == 2 and msg in one_line(err), err
    assert not out_dir.exists()
    code, _, err = kexa(capsys, "tokenizer", "stats", "--tokenizer", tmp_path, "--input", corpus)
    assert code == 2 and "no tokenizer.json" in one_line(err)


def test_sampling_arguments_are_checked_before_any_file(capsys, tmp_path):
    missing = tmp_path / "no_such_model"  # never read: the argument error comes first
    for command in ("generate", "chat"):
        extra = ["--prompt", "x"] if command == "generate" else []
        code, out, err = kexa(capsys, command, "--model", missing, *extra, "--max-new-tokens", "-3")
        assert code == 2 and out == "" and "max_new_tokens must be a positive integer, got -3" in one_line(err)


def test_broken_config_and_truncated_weights_say_so(capsys, tmp_path, folder):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"hidden_size": 4,')  # and no tokenizer.json: the config is the news
    code, _, err = kexa(capsys, "generate", "--model", broken, "--prompt", "x")
    assert code == 2 and "config.json is not valid JSON" in one_line(err)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in folder.iterdir():
        data = f.read_bytes()
        (truncated / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    for command in (["generate", "--model", truncated, "--prompt", "x"],
                    ["eval", "niah", "--model", truncated, "--lengths", "64"]):
        code, _, err = kexa(capsys, *command)
        line = one_line(err)
        assert code == 2 and "safetensors" in line and "cannot load a model" in line, err


def test_runtime_failure_is_one_line_exit_1(capsys, monkeypatch):
    from kexa import cli as kexa_cli

    def crash(argv):
        raise RuntimeError("disk full\nwhile writing")

    monkeypatch.setitem(sys.modules, "kexa_fake_command", types.SimpleNamespace(main=crash))
    monkeypatch.setitem(kexa_cli.COMMANDS, "fake", ("kexa_fake_command", "test"))
    code, _, err = kexa(capsys, "fake")
    assert code == 1 and one_line(err) == "kexa fake: error: RuntimeError: disk full while writing"
    monkeypatch.setenv("KEXA_DEBUG", "1")
    with pytest.raises(RuntimeError):
        kexa_main(["fake"])


def test_data_corpus_bad_arguments(capsys, tmp_path):
    code, _, err = kexa(capsys, "data", "corpus", "--out", tmp_path / "c", "--max-mb", "0")
    assert code == 2 and "--max-mb" in one_line(err)
    code, _, err = kexa(capsys, "data", "corpus", "--out", tmp_path / "c", "--input", tmp_path / "nope")
    assert code == 2 and "is not a folder" in one_line(err)
    assert not (tmp_path / "c").exists()


def test_subprocess_exit_codes():
    """The installed entry (`python -m kexa.cli`) maps errors the same way as the in-process main."""
    proc = subprocess.run([sys.executable, "-m", "kexa.cli", "info", "--model", "/nonexistent/model"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and one_line(proc.stderr).startswith("kexa info: error: --model")
    proc = subprocess.run([sys.executable, "-m", "kexa.cli", "info", "--preset"],  # argparse: usage, exit 2
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected one argument" in proc.stderr


def test_speedrun_shows_unmet_gates(tmp_path, capsys, monkeypatch):
    import kexa.speedrun as sr

    stages = [sr.Stage("one", "passes", lambda ctx: {"steps": 3}, lambda r: True),
              sr.Stage("gated", "gate unmet", lambda ctx: {"passed": {"stage_8x": False, "stage_32x": True},
                                                           "rounds": {"stage_8x": 2}}, lambda r: True)]
    monkeypatch.setattr(sr, "STAGES", stages)
    state = sr.speedrun(tmp_path / "run", sr.SpeedrunConfig(tmp_path / "r.toml", tmp_path / "e.toml"))
    out = capsys.readouterr().out
    assert "✓ one in" in out
    assert "✗ gated in" in out and "gates not met: stage_8x" in out and "✓ gated" not in out
    assert state["gated"]["gates_met"] is False and "gates_met" not in state["one"]


def test_chat_outlives_its_context(folder):
    """128 positions: a conversation of many turns trims its oldest turns; a message too long for the
    context alone is refused and not kept; the chat goes on after both."""
    tok = Tokenizer.from_pretrained(folder)
    engine = Engine(KExaone.from_pretrained(folder))
    long_message = "the lazy dog " * 80  # ~240 tokens > 128
    turns = ["the quick brown fox jumps over the lazy dog"] * 6 + [long_message, "hello", "/exit"]
    lines = iter(turns)
    out = io.StringIO()
    params = SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=(tok.eos_id,))
    history = chat_loop(engine, tok, params, 0, False, "be brief", read=lambda _: next(lines), out=out)
    text = out.getvalue()
    assert "(context full: dropped the" in text
    assert "message not sent: too long for the model's context of 128 tokens" in text
    assert history[0]["role"] == "system" and history[1]["role"] == "user"
    assert history[-2] == {"role": "user", "content": "hello"} and history[-1]["role"] == "assistant"
    assert all(m["content"] != long_message for m in history)
    prompt = tok.encode_chat(history[:-1], enable_thinking=False, add_generation_prompt=True).ids
    assert len(prompt) <= 128 - 12


def test_a_command_whose_module_is_not_built_says_so(capsys, monkeypatch):
    from kexa import cli as kexa_cli
    monkeypatch.setitem(kexa_cli.COMMANDS, "ghost", ("kexa.no_such_stage", "test"))
    code, _, err = kexa(capsys, "ghost")
    assert code == 1 and one_line(err) == "kexa ghost: not built yet in this checkout (kexa.no_such_stage does not exist)"
