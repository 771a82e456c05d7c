#!/usr/bin/env bash
# Numpy timings of the ROME / EMMET / MEMIT closed-form updates at GPT-2 XL MLP shape
# (d_out=1600, d_in=6400; n = 1, 100, 1000, 10000). See scripts/bench_solvers.py.
# OpenBLAS picks the slow Prescott kernels on this CPU unless told otherwise (platform-notes G1).
# Swift timings need an executable entry point (a hidden `mvc` subcommand, not written yet).
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-SkylakeX}"
exec python3 scripts/bench_solvers.py "$@"
