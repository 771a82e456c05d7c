#!/usr/bin/env bash
# The test command of the README (and of CI): installs missing system packages, then runs
# every test target against a release build (the numeric loops are ~10x slower in debug), then
# the Python client's pytest suite in the cached venv against that build. Arguments go to
# 'swift test' and then skip the Python suite (one Swift suite was asked for).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first: a style finding fails the run as a test would (config: .swift-format).
swift format lint --strict --recursive --parallel Sources Tests Package.swift
swift build -c release --product mvc
swift build -c release --product mvc-demo-editor
swift test -c release "$@"
[[ $# -gt 0 ]] && exit 0
if venv=$(bash scripts/python_env.sh); then
  PYTHONDONTWRITEBYTECODE=1 MVC_BINARY="$PWD/.build/release/mvc" PYTHONPATH="$PWD/python" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
else
  echo "python tests skipped: no venv could be built (scripts/python_env.sh says why above)"
fi
