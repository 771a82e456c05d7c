# bench.sh section 'bisect-parallel' (sourced by scripts/bench.sh; uses its $work, $repo, measure).
# Parallel bisection: a 1,000-commit history (mvc commit-factors, one planted disabling edit) on a
# ~50 MB model; an evaluation that sleeps 5 s then checks the model (mvc-demo-editor eval against
# the root model). Wall time and evaluations of plain 'mvc bisect run' and of 'bisect run --jobs K'
# for K = 1, 3, 7, locally and through srun on a single-node Slurm cluster (scripts/slurm-local.sh,
# as root; skipped with the reason otherwise); then the per-probe overhead of materializing a
# worktree ('mvc checkout REV -o DIR/') against cp of the model.
# Environment: MVC_BENCH_BISECT_COMMITS (1000), MVC_BENCH_BISECT_SLEEP (5).
(
  set -euo pipefail
  n=${MVC_BENCH_BISECT_COMMITS:-1000}
  pause=${MVC_BENCH_BISECT_SLEEP:-5}
  culprit=$((n * 7 / 10 + 3))
  dir=$work/bisect-parallel
  mkdir -p "$dir"
  cd "$dir"
  echo
  echo "== bisect-parallel: $n commits, evaluation = sleep $pause s + mvc-demo-editor eval (load: $(cut -d' ' -f1-3 /proc/loadavg)) =="
  mvc-demo-editor generate model.safetensors --blocks 4 --hidden 512 --intermediate 2048 --seed 3 > /dev/null
  cp model.safetensors base.safetensors
  python3 - <<'EOF'
import json, random, struct
def write(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
r = random.Random(7)
for block in range(4):
    t = "model.layers.%d.mlp.down_proj.weight" % block
    for name, scale in (("small", 1e-4), ("big", 0.2)):
        write("%s-%d.safetensors" % (name, block), {
            t + ".u": ([512, 1], [r.gauss(0, scale) for _ in range(512)]),
            t + ".v": ([2048, 1], [r.gauss(0, scale) for _ in range(2048)])})
EOF
  mvc init model.safetensors -q
  start=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    kind=small
    ((i == culprit)) && kind=big
    mvc commit-factors "$kind-$((i % 4)).safetensors" -m "edit $i" -q
  done
  echo "history: $n commit-factors commits in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; model $(stat -c %s model.safetensors) B; culprit edit $culprit"
  good=$(mvc log --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["commits"][-1]["id"])')

  cat > eval.sh <<EOF
#!/bin/sh
echo "start \$\$ \$(date +%s.%N)" >> '$dir/events.txt'
sleep $pause
mvc-demo-editor eval "\$1" --base '$dir/base.safetensors' --threshold 0.5 > /dev/null
s=\$?
echo "stop \$\$ \$(date +%s.%N) \$s" >> '$dir/events.txt'
exit \$s
EOF
  chmod +x eval.sh
  printf '%-44s %8s %12s %8s\n' "run" "wall s" "evaluations" "rounds"
  row() { # label, mvc bisect run arguments...
    local label=$1
    shift
    rm -f events.txt
    mvc bisect start -q HEAD "$good" > /dev/null
    local t0 t1
    t0=$(date +%s.%N)
    mvc bisect run "$@" > run.out 2>&1 || { tail -20 run.out >&2; echo "bench: '$label' failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    grep -q "is the first bad commit" run.out || { echo "bench: '$label' found no culprit" >&2; exit 1; }
    local rounds
    rounds=$(sed -n 's/.* \([0-9]*\) rounds;.*/\1/p' run.out)
    printf '%-44s %8.1f %12d %8s\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(grep -c '^start' events.txt)" "${rounds:--}"
    mvc bisect reset -q
  }
  row "plain mvc bisect run (model in place)" ./eval.sh model.safetensors
  for k in 1 3 7; do row "--jobs $k (local processes)" --jobs "$k" ./eval.sh '{model}'; done
  if out=$("$repo/scripts/slurm-local.sh" start "$work/slurm" 2> "$work/slurm.err"); then
    export "$out"
    trap '"$repo/scripts/slurm-local.sh" stop "$work/slurm"' EXIT
    for k in 1 3 7; do row "--jobs $k --launcher 'srun -n1'" --jobs "$k" --launcher 'srun -n1' ./eval.sh '{model}'; done
    row "--jobs 3 --launcher 'sbatch --wait'" --jobs 3 --launcher "sbatch --wait -o $dir/slurm-%j.out" ./eval.sh '{model}'
  else
    echo "Slurm rows skipped: $(cat "$work/slurm.err")"
  fi

  # Per-probe overhead: one worktree written by 'checkout -o' (unchanged tensors copied from the
  # working model, changed ones rebuilt), against cp of the model; median of 5.
  median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
  near=$(mvc log --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["commits"][1]["id"])')
  far=$(mvc log --json | python3 -c "import json,sys; c=json.load(sys.stdin)['commits']; print(c[len(c)//2]['id'])")
  for what in cp near far; do
    times=()
    for _ in 1 2 3 4 5; do
      rm -rf probe
      case $what in
        cp) measure cp model.safetensors probe.safetensors; rm -f probe.safetensors ;;
        near) measure mvc checkout -q "$near" -o probe/ ;;
        far) measure mvc checkout -q "$far" -o probe/ ;;
      esac
      times+=("$secs")
    done
    eval "t_$what=$(printf '%s\n' "${times[@]}" | median)"
  done
  rm -rf probe
  echo "per-probe worktree: cp of the model $t_cp s; checkout -o of HEAD~1 $t_near s, of HEAD~$((n / 2)) $t_far s (median of 5)"
)
