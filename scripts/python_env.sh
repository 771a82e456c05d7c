#!/usr/bin/env bash
# Creates (once) the Python venv of the client's tests and prints its path on stdout.
#
# The venv lives outside the clone, keyed by a hash of python/requirements-test.txt, so a clean
# clone (CI) reuses it and a change of the requirements builds a new one:
#   ${MVC_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/mvc}/venv-<12 hex digits>
# It is built in a temporary folder and renamed into place, so an interrupted install leaves
# no half venv behind. torch comes as the CPU-only wheel when one is reachable (PyTorch's CPU
# index, or a local wheel named by pip's find-links); otherwise pip takes PyPI's torch, which on
# Linux pulls ~3 GB of CUDA wheels (a warning says so).
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=python/requirements-test.txt
python=${MVC_PYTHON:-python3}
cache=${MVC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvc}
key=$( (cat "$requirements"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)
venv=$cache/venv-$key
if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import torch, transformers, peft, pytest' 2>/dev/null; then
  echo "$venv"
  exit 0
fi

mkdir -p "$cache"
building=$cache/.venv-$key.tmp-$$
trap 'rm -rf "$building"' EXIT
extra=()
if curl -fsS -m 5 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
elif ! python3 -m pip download --no-deps --no-index -d "$building.probe" -q \
  "$(grep -E '^torch==' "$requirements")" >/dev/null 2>&1; then
  echo "python_env.sh: no CPU-only torch wheel reachable; PyPI's torch brings ~3 GB of CUDA wheels" >&2
fi
rm -rf "$building.probe"
start=$(date +%s)
echo "python_env.sh: creating $venv (torch, transformers, peft: ~1.5 GB, about a minute with a CPU wheel)" >&2
"$python" -m venv "$building"
"$building/bin/pip" install -q "${extra[@]}" -r "$requirements" >&2
if "$venv/bin/python" -c 'import torch, transformers, peft, pytest' 2>/dev/null; then
  rm -rf "$building"  # another run finished the same venv meanwhile: keep the one in use
else
  rm -rf "$venv"
  mv "$building" "$venv"
fi
# Scripts in bin/ name the folder they were made in.
sed -i "s|$building|$venv|g" "$venv"/bin/* 2>/dev/null || true
trap - EXIT
echo "python_env.sh: venv ready in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv"
