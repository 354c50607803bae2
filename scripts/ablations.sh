#!/usr/bin/env bash
# The reference-following ablations (README "Ablations"), each a DVC experiment on
# the embedded toon default at 1000 steps (a third of its budget, with the default's
# lr_decay 0.5 off: BUDGET), so that the whole set fits an afternoon on a 2-core CPU
# (about 7 minutes a run). Each finished
# run's headline figures become a row of docs/ablations.csv
# (scripts/ablation_summary.py); `python scripts/ablation_summary.py table` prints the
# README's table, `dvc exp show --only-changed` the experiments themselves.
# Usage: scripts/ablations.sh [name ...]   (no names: every ablation, in order)
# Afterwards `dvc exp apply <name>` or `git checkout params.yaml && dvc checkout`
# brings back the run you want in data/ (apply also restores docs/ablations.csv as the
# experiment found it: record the run again afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
# Stage commands call `python`: make it the venv's, as `make run` does.
export PATH="$PWD/.venv/bin:$PATH"
DVC=${DVC:-.venv/bin/dvc}
PYTHON=${PYTHON:-.venv/bin/python}
BUDGET=${BUDGET:-"-S train.max_steps=1000 -S train.lr_decay=0.0"}  # BUDGET=" ": the default's

declare -A RUNS=(
  [default-1000]=""
  [oracle-long]="-S featurize.code=oracle_palette -S train.max_steps=3000 -S train.lr_decay=0.5"
  [oracle]="-S featurize.code=oracle_palette"
  [paper-concat]="-S model.style_inject=concat"
  [both]="-S model.style_inject=both"
  [plain-l1]="-S model.l1_balance=0.0"
  [code-fc1]="-S featurize.code=fc1"
  [code-fc1-relu]="-S featurize.code=fc1_relu"
  [code-pooled]="-S featurize.code=pooled"
  [distortion-mild]="-S featurize.distortion=mild"
  [distortion-off]="-S train.augmented_self_reference=false"
  [norm-batch]="-S model.norm=batch"
  [norm-none]="-S model.norm=none"
  [no-adversarial]="-S model.adversarial_weight=0.0"
  [res-128-same-time]="-S data.resolution=128 -S train.max_steps=250"  # after BUDGET: 250 wins
  [lr-decay]="-S train.lr_decay=0.5"  # after BUDGET: 0.5 wins
  [long-decay]="-S train.max_steps=3000 -S train.lr_decay=0.5"  # 3000 steps whatever BUDGET says
)
ORDER=(default-1000 oracle paper-concat both plain-l1 code-fc1 code-fc1-relu code-pooled
       distortion-mild distortion-off norm-batch norm-none no-adversarial res-128-same-time
       lr-decay long-decay oracle-long)

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown ablation: $name (one of: ${ORDER[*]})" >&2; exit 2; }
  echo "== $name: $BUDGET ${RUNS[$name]:-(the default)}"
  # A workspace experiment leaves its params in params.yaml: start each from the committed one.
  git checkout HEAD -- params.yaml dvc.lock
  # shellcheck disable=SC2086  # the -S arguments are meant to split
  "$DVC" exp remove "$name" >/dev/null 2>&1 || true  # rerunning a name replaces it
  "$DVC" exp run -n "$name" $BUDGET ${RUNS[$name]}
  "$PYTHON" scripts/ablation_summary.py record "$name" "$(echo $BUDGET ${RUNS[$name]} | sed "s/-S //g")"
done
git checkout HEAD -- params.yaml dvc.lock
