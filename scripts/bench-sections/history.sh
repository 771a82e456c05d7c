# Section "history" of scripts/bench.sh (sourced; uses its helpers: measure, calc, median, pass,
# du_bytes, mvc_rev, $work, $results, edit_tensor/edit_seed).
#
# Long histories, every byte under .mvc counted (du -sb, the keyframe cache included), and the
# checkout of edits at several depths against cp:
#   A. bench256 (256 MiB F32, 16 tensors), $history_n rank-1 edits (default 1000) with the demo
#      editor + `mvc commit` (each commit stores factors + residual, as an editor's would be);
#   B. a small llama-shaped model (2 blocks, hidden 256, 4.7 MB), $history_small_n rank-1 edits
#      (default 10000) alternating between two tensors: the longest chain per tensor.
# Each loop stops at $history_budget seconds (default 1800) and reports the N it reached. The
# histories are built under eatmydata when it is installed (no fsync while building: commit times
# are not what this section measures; checkouts run without it).
history_n=${history_n:-1000} history_small_n=${history_small_n:-10000} history_budget=${history_budget:-1800}
nosync=()
command -v eatmydata >/dev/null && nosync=(eatmydata)

# cpu CMD...: runs CMD; sets $secs (wall) and $cpu (user + sys).
cpu_measure() {
  /usr/bin/time -f "%e %U %S %M" -o "$work/.t" "$@" >"$work/.out" 2>&1 || {
    tail -20 "$work/.out" >&2
    echo "bench.sh: '$*' failed" >&2
    exit 1
  }
  read -r secs u s kib <"$work/.t"
  cpu=$(calc "$u + $s")
}

# history_run LABEL N TENSOR-FUNCTION: edits + commits in the current folder (a fresh `mvc init`),
# then the byte split and the checkouts. TENSOR-FUNCTION i prints the tensor of edit i.
history_run() {
  local label=$1 n=$2 pick=$3
  mvc init -q model.safetensors
  local base_bytes
  base_bytes=$(du_bytes .mvc)
  local revs=("$(mvc_rev)")
  local t0 i=1
  t0=$(date +%s.%N)
  while ((i <= n)); do
    "${nosync[@]}" mvc-demo-editor lowrank model.safetensors --tensor "$($pick "$i")" --rank 1 --scale 0.01 --seed "$i" >/dev/null
    "${nosync[@]}" mvc commit -q -m "edit $i"
    revs+=("$(mvc_rev)")
    if awk "BEGIN { exit !($(date +%s.%N) - $t0 > $history_budget) }"; then
      echo "(stopped after $i edits: the ${history_budget} s budget)"
      break
    fi
    ((i++))
  done
  ((i > n)) && i=$n
  local N=$i loop
  loop=$(calc "$(date +%s.%N) - $t0")
  local total cache own
  total=$(du_bytes .mvc)
  cache=$(du -sb .mvc/mvc-snapshots 2>/dev/null | cut -f1 || echo 0)
  cache=${cache:-0}
  own=$((total - base_bytes - cache))
  echo "== $label: $N rank-1 edits (editor + commit loop ${loop} s${nosync:+, under eatmydata})"
  echo ".mvc (du -sb, all files): $total B = base after init $base_bytes + commits' own $own ($((own / N)) B/edit) + keyframe cache $cache ($(ls .mvc/mvc-snapshots 2>/dev/null | wc -l) files)"
  echo "cache / commits' own = $(calc "$cache / ($own + 1)") (goal ≤ 0.5: $(pass "$cache <= 0.5 * $own"))"
  # cp of the model, page-cached: the floor a checkout is compared with.
  local cps=() cpus=()
  for _ in 1 2 3; do
    cpu_measure cp model.safetensors "$work/cpcheck.safetensors"
    cps+=("$secs") cpus+=("$cpu")
    rm -f "$work/cpcheck.safetensors"
  done
  local cp_s cp_cpu worst=0 worst_cpu=0
  cp_s=$(printf '%s\n' "${cps[@]}" | median) cp_cpu=$(printf '%s\n' "${cpus[@]}" | median)
  echo "cp $cp_s s (cpu $cp_cpu s)"
  local k
  for k in 1 $((N / 4)) $((N / 2)) $((3 * N / 4)) $((N - 1)); do
    ((k >= 1)) || continue
    cpu_measure mvc checkout "${revs[k]}" -o "$work/out.safetensors"
    rm -f "$work/out.safetensors"
    local a=$secs ac=$cpu
    cpu_measure mvc checkout "${revs[k]}" -o "$work/out.safetensors"
    rm -f "$work/out.safetensors"
    echo "checkout -o edit $k (depth $((N - k)) from HEAD): first $a s (cpu $ac s), again $secs s (cpu $cpu s)"
    worst=$(printf '%s\n' "$worst" "$a" | sort -g | tail -1)
    worst_cpu=$(printf '%s\n' "$worst_cpu" "$ac" | sort -g | tail -1)
  done
  echo "checkout max $worst s vs 3 × cp $(calc "3 * $cp_s") s: $(pass "$worst <= 3 * $cp_s") (wall, machine shared: see cpu)" | tee -a "$results/goals_history"
  echo "after the checkouts: .mvc $(du_bytes .mvc) B, cache $(du -sb .mvc/mvc-snapshots 2>/dev/null | cut -f1) B"
}

if ((history_n > 0)); then
echo
mkdir -p "$work/hist" && cd "$work/hist"
mvc-demo-editor generate model.safetensors --shape-set bench256 --seed 7 >/dev/null
pick_bench() { echo "${edit_tensor[$((($1 - 1) % 1000 + 1))]}"; }
history_run "history A: bench256 (256 MiB F32)" "$history_n" pick_bench
cd "$work" && rm -rf "$work/hist"
fi

if ((history_small_n > 0)); then
echo
mkdir -p "$work/hist" && cd "$work/hist"
mvc-demo-editor generate model.safetensors --blocks 2 --hidden 256 --intermediate 1024 --seed 3 >/dev/null
pick_two() { if (($1 % 2)); then echo model.layers.0.mlp.down_proj.weight; else echo model.layers.1.mlp.up_proj.weight; fi; }
history_run "history B: small llama (4.7 MB F32), edits on 2 tensors" "$history_small_n" pick_two
cd "$work" && rm -rf "$work/hist"
fi
