"""The K-AUT-style taxonomy file: domains -> risk areas, each with description, legal/cultural notes, severity
and seed prompts (harmful requests and benign look-alikes) in several languages.

    tax = Taxonomy.load("src/kexa/eval/safety/seed_taxonomy.json")      # or Taxonomy.load() for the seed
    for domain, area in tax.areas(): area.harmful["ko"], area.benign["en"], area.severity

Format (JSON): {"name", "version", "source" (who wrote it: say so), "languages": [...], "domains": [{"id",
"name", "description", "areas": [{"id", "name", "description", "notes", "severity" (low|medium|high|critical),
"korea_specific" (bool), "harmful": {lang: request}, "benign": {lang: request}}]}]}. `harmful` and `benign`
need "en" and "ko"; other languages feed the multilingual variant. Every problem is reported at once, one
line each, naming the domain and area.

The seed taxonomy (`seed_taxonomy.json`) is ours: 4 domains, 17 areas, 11 of them Korea-specific. It borrows
K-AUT's shape (4 domains, areas with Korean legal and cultural notes), not its text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SEED = Path(__file__).with_name("seed_taxonomy.json")
SEVERITIES = ("low", "medium", "high", "critical")
REQUIRED_LANGS = ("en", "ko")


@dataclass
class Area:
    id: str
    name: str
    description: str
    notes: str
    severity: str
    korea_specific: bool
    harmful: dict[str, str]
    benign: dict[str, str]


@dataclass
class Domain:
    id: str
    name: str
    description: str
    areas: list[Area] = field(default_factory=list)


@dataclass
class Taxonomy:
    name: str
    version: int
    source: str
    domains: list[Domain]

    def areas(self):
        """(domain, area) pairs in file order."""
        return [(d, a) for d in self.domains for a in d.areas]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Taxonomy":
        path = Path(path) if path else SEED
        try:
            data = json.loads(path.read_text("utf-8"))
        except OSError as e:
            raise ValueError(f"taxonomy {path}: cannot read ({e.strerror})") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"taxonomy {path}: not JSON (line {e.lineno}: {e.msg})") from e
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "taxonomy") -> "Taxonomy":
        errors: list[str] = []
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        for k in ("name", "source", "domains"):
            if k not in data:
                errors.append(f"{where}: missing top-level field {k!r}")
        domains, ids = [], set()
        for i, d in enumerate(data.get("domains") or []):
            at = f"{where}: domain {d.get('id', i) if isinstance(d, dict) else i}"
            if not isinstance(d, dict) or not isinstance(d.get("areas"), list) or not d.get("id"):
                errors.append(f"{at}: needs 'id', 'name' and a list of 'areas'")
                continue
            dom = Domain(d["id"], d.get("name", d["id"]), d.get("description", ""))
            for j, a in enumerate(d["areas"]):
                aat = f"{at}, area {a.get('id', j) if isinstance(a, dict) else j}"
                if not isinstance(a, dict):
                    errors.append(f"{aat}: not an object")
                    continue
                missing = [k for k in ("id", "name", "description", "severity", "harmful", "benign") if k not in a]
                if missing:
                    errors.append(f"{aat}: missing {missing}")
                    continue
                if a["id"] in ids:
                    errors.append(f"{aat}: duplicate area id")
                ids.add(a["id"])
                if a["severity"] not in SEVERITIES:
                    errors.append(f"{aat}: severity {a['severity']!r} not in {SEVERITIES}")
                for kind in ("harmful", "benign"):
                    seeds = a[kind]
                    if not isinstance(seeds, dict) or any(not isinstance(v, str) or not v.strip() for v in seeds.values()):
                        errors.append(f"{aat}: {kind!r} must map language codes to non-empty requests")
                    elif [lang for lang in REQUIRED_LANGS if lang not in seeds]:
                        errors.append(f"{aat}: {kind!r} needs languages {list(REQUIRED_LANGS)}, has {sorted(seeds)}")
                dom.areas.append(Area(a["id"], a["name"], a["description"], a.get("notes", ""), a["severity"],
                                      bool(a.get("korea_specific", False)), a["harmful"], a["benign"]))
            domains.append(dom)
        if not domains and not errors:
            errors.append(f"{where}: no domains")
        if errors:
            raise ValueError("invalid taxonomy:\n" + "\n".join(errors))
        return cls(data["name"], int(data.get("version", 1)), data["source"], domains)
