#!/usr/bin/env bash
# Select a whole params profile in one command and run the pipeline with it:
#   infra/select-profile.sh paper-13b              # params/paper-13b.yaml -> params.yaml, check it, dvc repro
#   infra/select-profile.sh paper-7b -s pretrain   # extra arguments go to `dvc repro`
# params.yaml stays the single source DVC reads (and records in dvc.lock), so the profile is copied over it rather
# than layered; `git diff params.yaml` shows what changed, `git restore params.yaml` returns to the embedded default.
set -euo pipefail
profile="${1:?usage: infra/select-profile.sh PROFILE [dvc repro args], PROFILE = a file name under params/}"
shift
src="params/${profile%.yaml}.yaml"
[[ -f "$src" ]] || { echo "no profile $src; available: $(ls params)" >&2; exit 2; }
python="${PYTHON:-.venv/bin/python}"
"$python" -c "import sys; from components.config import load_params; load_params(sys.argv[1])" "$src"
cp "$src" params.yaml
echo "params.yaml <- $src"
exec "${DVC:-dvc}" repro "$@"
