"""Evaluation suites: each turns its data into items and scores replies (the harness runs them).

    from kexa.eval.suites import build_suite, SUITES
    suite = build_suite("math", data="gsm8k_test.jsonl")    # options are each suite's constructor arguments

Suites: mcq (generated answer letter) and mcq-loglik (log-likelihood of the letter, for base models), math,
code (HumanEval), ifeval, mrcr (long context), translation, safety, agentic (tool-use episodes through
kexa.agent's loop). `kexa eval niah` stays its own command
(it needs the model's context sweep, not a chat client).
"""

from __future__ import annotations

from .base import Suite, read_jsonl

SUITES = {
    "mcq": "kexa.eval.suites.mcq:MCQ",
    "mcq-loglik": "kexa.eval.suites.mcq:MCQLoglik",
    "math": "kexa.eval.suites.math:Math",
    "code": "kexa.eval.suites.code:Code",
    "ifeval": "kexa.eval.suites.ifeval:IFEval",
    "mrcr": "kexa.eval.suites.mrcr:MRCR",
    "translation": "kexa.eval.suites.translation:Translation",
    "safety": "kexa.eval.suites.safety:Safety",
    "agentic": "kexa.eval.suites.agentic:Agentic",
}


def build_suite(name: str, **options) -> Suite:
    """The suite called `name`, built with `options` (a bad name or option is one ValueError line)."""
    import importlib
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    module, cls = SUITES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)(**options)
    except TypeError as e:
        raise ValueError(f"suite {name}: bad option ({e})") from e


__all__ = ["SUITES", "Suite", "build_suite", "read_jsonl"]
