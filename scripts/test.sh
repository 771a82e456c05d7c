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
# A watchdog: a test that hangs fails the run here, with the suite's output so far naming the
# test that started and never finished, instead of running into CI's limit. The whole suite
# takes 7–8 minutes on 2 idle cores; MVC_TEST_TIMEOUT (seconds) changes the limit.
limit=${MVC_TEST_TIMEOUT:-2700}
status=0
timeout --kill-after=30 "$limit" swift test -c release "$@" || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "test.sh: swift test did not finish within $limit s: a test hangs (the last 'started' line above without a 'passed' or 'failed' names it)" >&2
fi
[[ $status -eq 0 ]] || exit "$status"
[[ $# -gt 0 ]] && exit 0
if venv=$(bash scripts/python_env.sh); then
  PYTHONDONTWRITEBYTECODE=1 MVC_BINARY="$PWD/.build/release/mvc" PYTHONPATH="$PWD/python" \
    timeout --kill-after=30 "${MVC_PYTEST_TIMEOUT:-1200}" "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
else
  echo "python tests skipped: no venv could be built (scripts/python_env.sh says why above)"
fi
