"""Korea-contextualised safety evaluation in the K-AUT / KGC-Safety style (issue 19).

    from kexa.eval.safety import Taxonomy, instances, RuleJudge, safety_metrics
    rows = instances(Taxonomy.load())            # the seed taxonomy: ours, labelled as such
    kexa eval safety --taxonomy FILE --model DIR | --endpoint URL [--judge-endpoint URL] [--out DIR]

Files: taxonomy.py (the file format and its validation), seed_taxonomy.json (4 domains, 17 areas),
generate.py (instances: naive, adversarial, multi-turn, multilingual, benign look-alikes), judge.py (rule
refusal detector, LLM judge with a rubric), metrics.py (safe rate by domain x variant, over-refusal rate).
"""

from .generate import instances, to_preference_rows
from .judge import LLMJudge, RuleJudge
from .metrics import safety_metrics
from .taxonomy import SEED, Taxonomy

__all__ = ["SEED", "Taxonomy", "instances", "to_preference_rows", "RuleJudge", "LLMJudge", "safety_metrics"]
