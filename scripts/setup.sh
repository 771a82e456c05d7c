#!/usr/bin/env bash
# Installs the Debian packages mvc builds and runs against, if any are missing, then the Python
# venv of the client's tests (scripts/python_env.sh: cached outside the clone, built once;
# MVC_NO_PYTHON=1 skips it). Quiet and idempotent when everything is present; needs root or
# sudo for missing Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

python_env() {
  [[ ${MVC_NO_PYTHON:-} == 1 ]] && return 0
  bash scripts/python_env.sh >/dev/null ||
    echo "setup.sh: the Python venv could not be built; the Python tests will be skipped" >&2
}

packages=(libgit2-dev libzstd-dev libxxhash-dev libopenblas-dev liblapacke-dev zlib1g-dev libssl-dev
  pkg-config git time)
# For the tests only: the parallel-bisect suite starts a one-node Slurm cluster (as root), the
# report suite opens 'mvc report' in headless Chromium; without these (or without root) they are
# reported skipped, so they are installed only when we can.
optional=(slurm-wlm munge chromium)

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
can_install=0
{ [[ $(id -u) -eq 0 ]] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; } && can_install=1
if ((can_install)) && [[ ${MVC_NO_SLURM:-} != 1 ]]; then
  for p in "${optional[@]}"; do installed "$p" || missing+=("$p"); done
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  python_env
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif ((can_install)); then
  as_root=(sudo)
else
  echo "setup.sh: missing packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
python_env
