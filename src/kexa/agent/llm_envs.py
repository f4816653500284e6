"""The LLM-driven environment generator (the report's way to scale): a model writes the world and the goal
of a task for a given domain and language, as one JSON object; the program validates it against the
domain's JSON schema, renders the instruction, derives the pass check and screens it with the same
reference solver and filter as programmatic tasks (`envs.generate(propose=...)`). So both paths share one
task schema, one checker and one filter; a model's proposal that is not valid JSON or breaks the schema
counts as "invalid", one without a unique solution as "unsolvable" / "ambiguous".

    propose = LLMProposer(EndpointClient("http://127.0.0.1:8000"))
    tasks, counts, dialogues = generate(100, seed=0, propose=propose)

The example in the prompt is a programmatic draw of the same domain and language, so the model sees the
exact shapes and the names in the right language.
"""

from __future__ import annotations

import json
import random

import jsonschema

from .client import ChatClient, ClientError
from .domains import DOMAINS
from .envs import TaskError, make_task

_SQL = {"TEXT": {"type": "string"}, "INTEGER": {"type": "integer"}, "REAL": {"type": "number"}}


def scenario_schema(domain: str) -> dict:
    """JSON schema of a proposal: {"state": {table: [[row], ...]}, "goal": {...}, "type": task type}."""
    d = DOMAINS[domain]
    tables = {name: {"type": "array", "maxItems": 64, "items": {
        "type": "array", "prefixItems": [_SQL[t] for _, t in cols], "minItems": len(cols), "maxItems": len(cols)}}
        for name, cols in d.tables.items()}
    return {"type": "object", "additionalProperties": False, "required": ["type", "state", "goal"], "properties": {
        "type": {"enum": [g.name for g in d.goals]},
        "state": {"type": "object", "properties": tables, "required": list(tables), "additionalProperties": False},
        "goal": {"oneOf": [g.goal_schema for g in d.goals]}}}


def _json_object(text: str) -> dict:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise TaskError("the reply holds no JSON object")
    try:
        return json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise TaskError(f"not valid JSON: {e.msg}") from e


class LLMProposer:
    """`propose(rng, domain, lang, task_id) -> task` through a chat model."""

    def __init__(self, client: ChatClient, temperature: float = 1.0, max_tokens: int = 2048):
        self.client, self.temperature, self.max_tokens = client, temperature, max_tokens

    def prompt(self, rng: random.Random, domain: str, lang: str) -> list[dict]:
        d = DOMAINS[domain]
        g = rng.choice(d.goals)
        state = d.populate(rng, lang)
        example = {"type": g.name, "state": state, "goal": g.draw(rng, state, lang)}
        tables = "; ".join(f"{t}({', '.join(f'{c} {ty}' for c, ty in cols)})" for t, cols in d.tables.items())
        return [{"role": "system", "content": "You design realistic, solvable tool-use scenarios for training agents."},
                {"role": "user", "content":
                    f"Domain: {domain}. Language of all names: {lang}. Tables: {tables}. Task types and their goal "
                    f"fields: {json.dumps({x.name: x.goal_schema['properties'] for x in d.goals})}.\n"
                    f"Write a NEW scenario (different rows, a goal with exactly one solution) as one JSON object "
                    f"like this example, and nothing else:\n{json.dumps(example, ensure_ascii=False)}"}]

    def __call__(self, rng: random.Random, domain: str, lang: str, task_id: str) -> dict:
        try:
            reply = self.client.chat(self.prompt(rng, domain, lang), None, temperature=self.temperature,
                                     max_tokens=self.max_tokens, seed=rng.randrange(2**31))
        except ClientError as e:
            raise TaskError(f"the generator model failed: {e}") from e
        proposal = _json_object(reply.message["content"])
        try:
            jsonschema.validate(proposal, scenario_schema(domain))
            jsonschema.validate(proposal["goal"], DOMAINS[domain].goal(proposal["type"]).goal_schema)
        except jsonschema.ValidationError as e:
            raise TaskError(f"proposal breaks the schema at {'/'.join(map(str, e.absolute_path)) or 'top'}: "
                            f"{e.message}") from e
        return make_task(domain, lang, proposal["type"], proposal["state"], proposal["goal"], task_id, source="llm")
