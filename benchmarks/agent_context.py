"""Context bound of the trajectory compressor (issue 18 target; K-EXAONE report §3.3, BrowseComp setting).

A 200-step search trajectory over a local archive of 200 records (bm25s search, 5 results with snippets
per step): the scripted policy searches record after record, R001..R200; six records are marked
"priority" (three of them in the first 50 steps), and the task's answer is the sum of the priority codes,
so facts from early steps are needed at the end. Three runs of the same policy through `kexa.agent`:

- uncompressed: the whole history stays in the context;
- compressed: every 50 steps the trajectory compressor replaces the history by a JSON record; the
  compressor here is the scripted model in its compressor role (it reads the transcript it is given and
  keeps the priority codes as facts, the next record to read as progress);
- fallback only: the compressor's replies are never valid records, so each compression falls back to
  keeping the last 4 steps: the control that shows what the record carries.

Prompt tokens are those of the chat template's rendering (tools declared) counted with a kexa BPE
tokenizer trained on the archive (vocab 2000); the peak is over the main agent's calls.
Target: peak(compressed) <= 25% of peak(uncompressed), success equal (both right).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/agent_context.py
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

from kexa.agent import Agent, AgentConfig, ToolBox
from kexa.agent.builtin import Collection, search_tools
from kexa.agent.client import ScriptedClient
from kexa.tokenizer import train_bpe

WORDS = ("archive ledger shipment harbor customs invoice ceramic textile northern route inspector seal crate "
         "warehouse quarter season tariff clerk manifest vessel cargo dock permit audit stamp").split()
FACT = re.compile(r"R(\d{3}) is marked priority; its code is (\d+)")
SEEN = re.compile(r'"query": "R(\d{3})')
TASK = ("The archive holds records R001 to R200. Search them one by one and tell me the sum of the codes of "
        "the records marked priority.")


def archive(seed: int, n: int, priority: list[int]) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(1, n + 1):
        code = rng.randint(100, 999)
        mark = f"R{i:03d} is marked priority; its code is {code}." if i in priority else \
            f"R{i:03d} is routine; its code is {code}."
        filler = " ".join(rng.choice(WORDS) for _ in range(70))
        docs.append({"id": f"R{i:03d}", "title": f"Archive record R{i:03d}", "text": f"{mark} {filler}."})
    return docs


def facts_in(text: str) -> dict[int, int]:
    return {int(r): int(c) for r, c in FACT.findall(text)}


def policy(n: int):
    def act(messages, tools):
        if messages[0]["content"].startswith("You are the trajectory compressor"):  # the compressor role
            seen = messages[-1]["content"]
            done = max(map(int, SEEN.findall(seen)), default=0)
            record = {"facts": [f"R{r:03d} is marked priority; its code is {c}." for r, c in sorted(facts_in(seen).items())],
                      "open_questions": [f"priority records among R{done + 1:03d}-R{n:03d}"] if done < n else [],
                      "progress": f"searched R001-R{done:03d}"}
            return {"content": json.dumps(record)}
        context = "\n".join(m["content"] or "" for m in messages) + "\n" + "\n".join(
            c["function"]["arguments"] if isinstance(c["function"]["arguments"], str) else json.dumps(c["function"]["arguments"])
            for m in messages for c in m.get("tool_calls") or [])
        done = max([int(x) for x in SEEN.findall(context)] + [int(x) for x in re.findall(r"searched R001-R(\d{3})", context)],
                   default=0)
        if done < n:  # shared words in the query: each search returns 5 results, as a web search would
            return {"tool_calls": [{"function": {"name": "search", "arguments": {
                "query": f"R{done + 1:03d} archive record code", "k": 5}}}]}
        return {"content": f"The priority codes sum to {sum(facts_in(context).values())}."}

    return act


class _BrokenCompressor:
    """The same policy, except that its compressor replies are never valid records."""

    def __init__(self, act):
        self.act = act

    def __call__(self, messages, tools):
        if messages[0]["content"].startswith("You are the trajectory compressor"):
            return {"content": "Here is what I found so far: several codes."}
        return self.act(messages, tools)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/agent_context.json")
    args = ap.parse_args()

    n = args.steps
    priority = [3, 17, 41, n * 3 // 4, n - 20, n - 1]
    docs = archive(args.seed, n, priority)
    truth = sum(facts_in(" ".join(d["text"] for d in docs)).values())
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "archive.txt"
        corpus.write_text("\n".join(f"{d['title']}\n{d['text']}" for d in docs) + "\n" + TASK, "utf-8")
        tok = train_bpe([str(corpus)], vocab_size=2000)
    coll = Collection(docs)
    # the 160-character default snippet would cut the fact off; search engines show ~2 lines
    make = lambda summarize: ToolBox().add(search_tools(coll, summarize, snippet_chars=400)[0])  # noqa: E731

    runs = {}
    for name, every, pol in (("uncompressed", 0, policy(n)), ("compressed", args.every, policy(n)),
                             ("fallback_only", args.every, _BrokenCompressor(policy(n)))):
        t0 = time.perf_counter()
        record = Agent(ScriptedClient(pol, tok), AgentConfig(max_steps=n + 1, compress_every=every, retries=1,
                                                             keep_last=4)).run(TASK, make)
        answer = re.findall(r"\d+", record["answer"])
        runs[name] = {"steps": record["steps"], "finish": record["finish"], "answer": record["answer"],
                      "success": bool(answer) and int(answer[-1]) == truth,
                      "peak_prompt_tokens": record["peak_prompt_tokens"],
                      "peak_compressor_prompt_tokens": record["peak_subagent_prompt_tokens"],
                      "final_prompt_tokens": record["prompt_tokens"][-1],
                      "compressions": record["compressions"], "fallbacks": record["compression_fallbacks"],
                      "seconds": round(time.perf_counter() - t0, 2)}
        if name == "uncompressed":
            p = record["prompt_tokens"]
            runs[name]["tokens_per_step_mean"] = round((p[-1] - p[0]) / (len(p) - 1), 1)
            runs[name]["first_prompt_tokens"] = p[0]
        print(name, runs[name])
    ratio = runs["compressed"]["peak_prompt_tokens"] / runs["uncompressed"]["peak_prompt_tokens"]
    result = {
        "benchmark": "agent_context", "steps": n, "compress_every": args.every, "priority_records": priority,
        "truth": truth, "tokenizer": "kexa BPE trained on the archive, vocab 2000",
        "search": "bm25s over 200 records, k=5, 400-character snippets",
        "runs": runs, "peak_ratio_compressed_vs_uncompressed": round(ratio, 4),
        "target_peak_ratio_le_0.25": ratio <= 0.25,
        "target_success_equal": runs["compressed"]["success"] == runs["uncompressed"]["success"],
        "uncompressed_success": runs["uncompressed"]["success"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    print(json.dumps({k: result[k] for k in ("peak_ratio_compressed_vs_uncompressed", "target_peak_ratio_le_0.25",
                                             "target_success_equal")}))


if __name__ == "__main__":
    main()
