"""The K-EXAONE chat template: exact strings, render→parse identity, HF parity, assistant masks."""

import copy
import json

import pytest

from kexa.tokenizer import Tokenizer, parse_response, render, train_superbpe
from kexa.tokenizer.chat import render_with_spans

from test_tokenizer_samples import corpus

TOOLS = [{"type": "function", "function": {"name": "search", "description": "검색 / web search",
                                            "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                           "required": ["query"]}}},
         {"type": "function", "function": {"name": "calc", "description": "evaluate math",
                                            "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]


def agent_conversation():
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "서울의 인구와 2의 10제곱을 알려줘."},
        {"role": "assistant", "reasoning_content": "I need two tools: search and calc.",
         "content": "Let me look these up.",
         "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "서울 인구"}}},
                        {"type": "function", "function": {"name": "calc", "arguments": {"expr": "2**10"}}}]},
        {"role": "tool", "content": "서울 인구: 약 940만 명"},
        {"role": "tool", "content": "1024"},
        {"role": "assistant", "reasoning_content": "Both results are in.\nCompose the answer.",
         "content": "서울 인구는 약 940만 명이고, 2^10 = 1024입니다.", "tool_calls": []},
    ]


def test_non_reasoning_prompt_matches_reference():
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert render(msgs, enable_thinking=False, add_generation_prompt=True) == (
        "<|system|>\nsys<|endofturn|>\n<|user|>\nhi<|endofturn|>\n<|assistant|>\n<think>\n\n</think>\n\n")


def test_reasoning_is_default_and_leaves_think_open():
    msgs = [{"role": "user", "content": "  hi  "}]
    assert render(msgs, add_generation_prompt=True) == "<|user|>\nhi<|endofturn|>\n<|assistant|>\n<think>\n"


def test_tools_tool_calls_and_merged_results():
    text = render(agent_conversation(), tools=TOOLS)
    tool_json = json.dumps(TOOLS[0], ensure_ascii=False)
    assert text.startswith("<|tool_declare|>\n# Tools\n<tool>" + tool_json + "</tool>\n<tool>")
    assert "</tool>\n<|endofturn|>\n<|system|>\n" in text
    assert ("<|assistant|>\n<think>\nI need two tools: search and calc.\n</think>\n\nLet me look these up.\n"
            '<tool_call>{"name": "search", "arguments": {"query": "서울 인구"}}</tool_call>\n'
            '<tool_call>{"name": "calc", "arguments": {"expr": "2**10"}}</tool_call><|endofturn|>\n') in text
    assert ("<|tool|>\n<tool_result>서울 인구: 약 940만 명</tool_result>\n<tool_result>1024</tool_result>"
            "<|endofturn|>\n") in text
    assert text.count("<|tool|>") == 1


def test_history_reasoning_dropped_before_last_user():
    msgs = [{"role": "user", "content": "q1"},
            {"role": "assistant", "reasoning_content": "secret", "content": "a1"},
            {"role": "user", "content": "q2"}]
    text = render(msgs, add_generation_prompt=True)
    assert "secret" not in text
    assert text == ("<|user|>\nq1<|endofturn|>\n<|assistant|>\n<think>\n\n</think>\n\na1<|endofturn|>\n"
                    "<|user|>\nq2<|endofturn|>\n<|assistant|>\n<think>\n")


def _assistant_outputs(text, spans):
    return [text[s:e] for s, e in spans]


@pytest.mark.parametrize("thinking", [True, False])
def test_render_then_parse_is_identity(thinking):
    msgs = agent_conversation()
    text, spans = render_with_spans(msgs, tools=TOOLS, enable_thinking=thinking)
    outputs = _assistant_outputs(text, spans)
    assistants = [m for m in msgs if m["role"] == "assistant"]
    assert len(outputs) == len(assistants)
    for out, msg in zip(outputs, assistants):
        parsed = parse_response(out)
        reasoning = msg["reasoning_content"].strip() if thinking else ""  # non-reasoning mode drops it
        expected = {"role": "assistant", "reasoning_content": reasoning,
                    "content": msg["content"].strip(), "tool_calls": msg["tool_calls"]}
        assert parsed == expected
    # the generation span is exactly what a model writes after the generation prompt
    prompt = render(msgs[:-1], tools=TOOLS, enable_thinking=thinking, add_generation_prompt=True)
    assert text.startswith(prompt) and text[len(prompt):] == outputs[-1] + "\n"


def test_parse_handles_open_think_bad_json_and_string_arguments():
    assert parse_response("<think>\nstill thinking")["reasoning_content"] == "still thinking"
    bad = parse_response("x\n</think>\n\nok <tool_call>{not json}</tool_call><|endofturn|>garbage")
    assert bad["tool_calls"] == [] and bad["content"] == "ok <tool_call>{not json}</tool_call>"
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}]
    text, spans = render_with_spans(msgs)
    assert '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>' in text
    assert parse_response(text[spans[0][0]:spans[0][1]])["tool_calls"][0]["function"]["arguments"] == {"a": 1}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "c.txt"
    text = corpus(1500) + render(agent_conversation(), tools=TOOLS) * 20
    path.write_text(text, "utf-8")
    return train_superbpe([path], 900, transition=0.6).save_pretrained(tmp_path_factory.mktemp("tok"))


CASES = [
    (agent_conversation(), TOOLS, True, False),
    (agent_conversation(), TOOLS, False, False),
    (agent_conversation()[:2], None, True, True),
    (agent_conversation()[:2], None, False, True),
    (agent_conversation()[:5], TOOLS, True, True),
]


@pytest.mark.parametrize("msgs,tools,thinking,gen", CASES)
def test_transformers_renders_identically_and_masks_alike(tok_dir, msgs, tools, thinking, gen):
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    tok = Tokenizer.from_pretrained(tok_dir)
    ours = tok.apply_chat_template(copy.deepcopy(msgs), tools=tools, enable_thinking=thinking, add_generation_prompt=gen)
    theirs = auto.apply_chat_template(copy.deepcopy(msgs), tools=tools, enable_thinking=thinking,
                                      add_generation_prompt=gen, tokenize=False)
    assert ours == theirs
    enc = tok.encode_chat(msgs, tools=tools, enable_thinking=thinking, add_generation_prompt=gen, split_at_spans=False)
    out = auto.apply_chat_template(copy.deepcopy(msgs), tools=tools, enable_thinking=thinking, add_generation_prompt=gen,
                                   tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert enc.ids == list(out["input_ids"])
    if any(m["role"] == "assistant" for m in msgs):
        assert enc.assistant_mask == list(out["assistant_masks"])


def test_assistant_mask_covers_generated_text_and_prompts_encode_alone(tok_dir):
    tok = Tokenizer.from_pretrained(tok_dir)
    msgs = agent_conversation()
    enc = tok.encode_chat(msgs, tools=TOOLS)
    text, spans = render_with_spans(msgs, tools=TOOLS)
    assert tok.decode(enc.ids) == text
    masked = tok.decode([i for i, m in zip(enc.ids, enc.assistant_mask) if m])
    assert masked == "".join(_assistant_outputs(text, spans))
    assert sum(enc.assistant_mask) < len(enc.ids) and enc.ids[-1] == 53 or enc.ids[-1] != 53
    # prompt-then-answer: the ids before the last answer are exactly the encoded generation prompt
    prompt = tok.apply_chat_template(msgs[:-1], tools=TOOLS, add_generation_prompt=True, tokenize=True)
    assert enc.ids[:len(prompt)] == prompt
    assert enc.assistant_mask[len(prompt)] == 1 and enc.assistant_mask[len(prompt) - 1] == 0
    # the end-of-turn token closing each answer is trained on; the newline after it is not
    eot = [i for i, t in enumerate(enc.ids) if t == tok.eos_id]
    assert all(enc.assistant_mask[i] for i in eot if i > 0 and enc.assistant_mask[i - 1])
