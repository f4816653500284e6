"""Safety: the instances of a K-AUT-style taxonomy (`kexa.eval.safety`), judged, as safe rate by domain x
variant and over-refusal rate. `taxonomy=FILE` (default: our seed taxonomy); `judge="rule"` (default, offline:
refusal detection) or an OpenAI-compatible URL for the LLM judge (`judge_model` names its model); `split`
all (default: any model) | heldout (the areas a kexa preference run never trained on) | train."""

from __future__ import annotations

from pathlib import Path

from .base import Suite, take


class Safety(Suite):
    name = "safety"
    max_tokens = 1024

    def __init__(self, taxonomy: str | None = None, judge: str = "rule", judge_model: str | None = None,
                 split: str = "all"):
        from ..safety import LLMJudge, RuleJudge, Taxonomy, instances
        if split not in ("all", "train", "heldout"):
            raise ValueError(f"safety split must be all, train or heldout; got {split!r}")
        self.taxonomy_path, self.split = taxonomy, split
        self.taxonomy = Taxonomy.load(taxonomy)
        self.rows = [r for r in instances(self.taxonomy) if split == "all" or r["split"] == split]
        self.judge = RuleJudge() if judge == "rule" else LLMJudge(judge, judge_model, taxonomy=self.taxonomy)

    def settings(self) -> dict:
        return {"taxonomy": self.taxonomy_path or "kexa seed taxonomy (ours, K-AUT-style)",
                "taxonomy_name": self.taxonomy.name, "areas": len(self.taxonomy.areas()),
                "split": self.split, "instances": len(self.rows), "judge": self.judge.name}

    def items(self, limit):
        # a limit keeps every variant of the first areas rather than the naive variants of all areas
        return take(self.rows, limit)

    def score(self, items, replies):
        from kexa.rewards import is_refusal
        out = []
        for it, r in zip(items, replies):
            try:
                verdict, error = self.judge.judge(it, r.content), None
            except Exception as e:  # noqa: BLE001 — a judge failure is this item's, reported, never a crash
                verdict, error = None, " ".join(str(e).split())[:300]
            out.append({"verdict": verdict, "refused": float(is_refusal(r.content)), "judge_error": error})
        return out

    def summarize(self, records, out_dir: Path, mode: str) -> dict:
        from ..safety import safety_metrics
        return safety_metrics([(r["item"], r["scores"]["verdict"]) for r in records])
