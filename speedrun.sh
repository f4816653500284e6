#!/usr/bin/env bash
# The README's main command: set up .venv/ if needed, then run the whole K-EXAONE recipe at nano
# scale (corpus -> SuperBPE -> pre-training -> context extension -> evaluation -> report).
#   bash speedrun.sh            # ~30 min on 2 CPU cores; RUN = runs/speedrun
#   bash speedrun.sh --quick    # tiny model, a few minutes
#   bash speedrun.sh --fresh    # redo every stage
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/kexa ] || bash setup.sh
exec .venv/bin/kexa speedrun "$@"
