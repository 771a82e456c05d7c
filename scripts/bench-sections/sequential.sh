# ---- section: sequential (sourced by scripts/bench.sh) ----------------------------------------
# N sequential AlphaEdit / ENCORE / MEMIT edits (`mvc edit`) of one generated 128×512 layer with
# real-text-like keys (scripts/bench_sequential.py): retention after every edit, the collapse
# signals of `mvc score --signals`, and when each rises or falls. N = $seq_n (default 1000).
seq_n=${seq_n:-1000}
seq_python=${MVC_BENCH_PYTHON:-}
if [[ -z $seq_python ]]; then
  for candidate in "${MVC_CACHE_DIR:-$HOME/.cache/mvc}"/venv-*/bin/python python3; do
    if "$candidate" -c 'import numpy' 2>/dev/null; then seq_python=$candidate; break; fi
  done
fi
if [[ -z $seq_python ]]; then
  echo "sequential: skipped (needs python3 with numpy; scripts/setup.sh builds a venv)"
else
  for method in alphaedit encore memit; do
    echo "== sequential: $method, $seq_n edits (machine shared: times are under load)"
    /usr/bin/time -f "sequential $method: %e s wall, %U s user, %S s sys, %M KiB max RSS" \
      "$seq_python" scripts/bench_sequential.py "$bin/mvc" "$work/sequential-$method" "$method" "$seq_n"
  done
fi
