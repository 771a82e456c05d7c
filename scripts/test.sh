#!/usr/bin/env bash
# The test command of the README (and of CI): installs missing system packages, then runs
# every test target against a release build (the numeric loops are ~10x slower in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first: a style finding fails the run as a test would (config: .swift-format).
swift format lint --strict --recursive --parallel Sources Tests Package.swift
swift build -c release --product mvc
swift build -c release --product mvc-demo-editor
swift test -c release "$@"
