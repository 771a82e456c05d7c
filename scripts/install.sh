#!/usr/bin/env bash
# Installs mvc for a new user: the Debian packages it needs (scripts/setup.sh, without the test
# venv), a release build of the binary copied to PREFIX/bin, and the Python client package
# ('pip install ./python') into the Python that runs your editing code.
#
#   scripts/install.sh                         # ~/.local/bin/mvc (root: /usr/local/bin), python3's pip
#   scripts/install.sh --prefix /opt/mvc --python ~/venvs/edit/bin/python
#
# The client finds the binary on PATH, or through MVC_BINARY, or mvc.Repo(path, binary=...).
# The package depends on torch, safetensors and numpy; pip installs them if they are missing
# (extra pip arguments: MVC_PIP_ARGS, e.g. "--no-deps" when torch is already there).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$([[ $(id -u) -eq 0 ]] && echo /usr/local || echo "$HOME/.local")
python=python3
while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    *) echo "usage: scripts/install.sh [--prefix DIR] [--python PYTHON]" >&2; exit 129 ;;
  esac
done
MVC_NO_PYTHON=1 bash scripts/setup.sh
swift build -c release --product mvc
mkdir -p "$prefix/bin"
install -m 755 .build/release/mvc "$prefix/bin/mvc"
# shellcheck disable=SC2086
"$python" -m pip install -q ${MVC_PIP_ARGS:-} ./python
echo "install.sh: mvc in $prefix/bin (on PATH: $(command -v mvc >/dev/null && echo yes || echo "no, add $prefix/bin"))," \
  "package 'mvc' for $("$python" -c 'import sys; print(sys.executable)')"
