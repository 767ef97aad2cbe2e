#!/usr/bin/env bash
# Run by hand now and then: install the newest releases of every dependency into
# ./.venv-newest (not the constraints the suite is pinned to), run the quick tests, and
# say which versions moved. If they pass, refresh installer/constraints.txt with:
#   .venv-newest/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia|triton|pip|setuptools|wheel)[-=]'
# Extra arguments go to pytest (e.g. -m "not slow" is the default; pass "" for everything).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .venv-newest
"$PY" -m venv .venv-newest
.venv-newest/bin/python -m pip install -q --upgrade pip
.venv-newest/bin/python -m pip install -q "torch==2.13.0" 2>/dev/null || .venv-newest/bin/python -m pip install -q torch
.venv-newest/bin/python -m pip install -q --upgrade -e ".[test]"
echo "Versions that differ from installer/constraints.txt:"
.venv-newest/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia|triton|pip|setuptools|wheel)[-=]' \
    | diff <(grep -v '^#' installer/constraints.txt | sort -f) <(sort -f -) | grep '^[<>]' || echo "  none"
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv-newest/bin/python -m pytest -q -p no:cacheprovider -m "${1:-not slow}" -x
