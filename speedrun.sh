#!/usr/bin/env bash
# The README's main command: set up .venv/ if needed, then run the whole K-EXAONE recipe at nano
# scale (corpus -> SuperBPE -> pre-training -> context extension -> SFT -> evaluation -> report).
# RUN/model is the SFT model; the last line prints how to chat with it (kexa serve --model RUN/model).
#   bash speedrun.sh            # ~25 min on 2 CPU cores before SFT (not yet timed with it); RUN = runs/speedrun
#   bash speedrun.sh --quick    # tiny model, ~2 min
#   bash speedrun.sh --fresh    # redo every stage
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/kexa ] || bash setup.sh
exec .venv/bin/kexa speedrun "$@"
