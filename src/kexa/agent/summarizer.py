"""The summarizer sub-agent (K-EXAONE report §3.3): a fetched page over a token threshold is distilled
by the same model, with the query in view, before it enters the main agent's context. The raw page
stays in the trajectory log (`ToolOutput.raw`), only the summary is shown to the agent.

    summarize = Summarizer(client, over_tokens=1024)
    out = summarize(page_text, query="who founded the vault?")   # ToolOutput(text, raw)
"""

from __future__ import annotations

from dataclasses import dataclass

from .client import ChatClient, ClientError
from .tools import ToolOutput

SYSTEM = ("You are the summarizer of a research agent. Distil the page below into the facts that bear on "
          "the query: names, numbers, dates and where they come from, in a few short sentences. "
          "Write only the summary.")


@dataclass
class Summarizer:
    client: ChatClient
    over_tokens: int  # pages longer than this are summarised (0: never)
    max_tokens: int = 1024  # length of a summary
    calls: int = 0

    def __call__(self, page: str, query: str) -> ToolOutput:
        if self.over_tokens <= 0 or self.client.count_tokens(page) <= self.over_tokens:
            return ToolOutput(page)
        self.calls += 1
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Query: {query}\n\nPage:\n{page}"}]
        try:
            summary = self.client.chat(messages, None, temperature=0.0, max_tokens=self.max_tokens).message["content"]
        except ClientError as e:  # the page is too long even for the summarizer: show its head
            summary = f"(summary failed: {e}) " + page[: 4 * self.over_tokens]
        return ToolOutput(f"[summary of a {len(page)}-character page] {summary.strip()}", raw=page)
