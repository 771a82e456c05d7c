# Section "history" of scripts/bench.sh (sourced; uses its helpers: calc, median, pass, du_bytes,
# mvc_rev, $work, $results, $repo, edit_tensor).
#
# Long histories, every byte under .mvc counted (du -sb, the keyframe cache included), the cost
# of each commit against its depth, and the checkout of edits at several depths against cp:
#   A. bench256 (256 MiB F32, 16 tensors), $history_n rank-1 edits (default 1000) spread as in
#      the `long` section;
#   B. a small llama-shaped model (2 blocks, hidden 256, 4.7 MB), $history_small_n rank-1 edits
#      (default 10000) alternating between two tensors: the longest chain per tensor.
# history_commit=factors (default): each edit is `mvc commit-factors` of a rank-1 factor file
#   prepared beforehand (scripts/bench/history_factors.py, numpy): how an editor that hands over
#   its factors (python Repo.commit_factors) commits, and fast enough to reach N.
# history_commit=full: each edit is the demo editor rewriting the model + a full-model
#   `mvc commit` (factors recovered from the whole file, + residual), as most editors' edits
#   arrive; ~100× slower per edit on bench256, so N is rarely reached in the budget.
# Each loop stops at $history_budget seconds (default 1800) and reports the N it reached. The
# histories are built under eatmydata when installed (its library preloaded into each mvc: no
# fsync; the per-commit times, CPU and wall, are measured that way); checkouts run without it.
# The loop starts one process per edit, the mvc that commits it (timed by bash's `time`, the
# budget read from $EPOCHREALTIME, the revisions listed once at the end), so the driver adds
# little to the 10,000 commits of loop B. A checkout's replay is read from
# MVC_TRACE_PERFORMANCE ("replay of 'T': K states after its start"): the most states a tensor
# replayed one by one after its start (complete state or keyframe).
# Checkouts at seven depths, two ways: `mvc checkout REV -o FILE` (a whole fresh file), and in
# place, as a user moves the working model (HEAD → `mvc checkout REV` → bytes checked against
# the -o file's → `mvc checkout BRANCH`); wall and CPU-s beside cp of the model.
# history_dir=DIR keeps each history in DIR/bench256 and DIR/small (not removed at exit); a later
# run with the same DIR reuses a finished one and measures only the checkouts (minutes instead of
# the tens of minutes 1,000 + 10,000 commits take). A reused history's N is whatever it was built
# with, and its keyframe cache holds what earlier checkouts left.
history_n=${history_n:-1000} history_small_n=${history_small_n:-10000} history_budget=${history_budget:-1800}
history_commit=${history_commit:-factors}
# history_bin=DIR: run the mvc (and mvc-demo-editor) in DIR instead of this checkout's release build,
# e.g. a copy kept while the sources change during a long build.
[[ -n ${history_bin:-} ]] && export PATH="$history_bin:$PATH"
nosync=()
command -v eatmydata >/dev/null && nosync=(eatmydata)
# The same preload without eatmydata's shell wrapper: a variable on the mvc command line.
eatmydata_lib=
for f in /usr/lib/x86_64-linux-gnu/libeatmydata.so /usr/lib/libeatmydata.so /usr/lib/*/libeatmydata.so; do
  [[ -e $f ]] && { eatmydata_lib=$f; break; }
done
[[ -n $eatmydata_lib ]] || nosync=()

# now_us: wall clock in microseconds, without a process.
now_us() { echo $((${EPOCHREALTIME/./})); }

# cpu_measure CMD...: runs CMD; sets $secs (wall) and $cpu (user + sys).
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
# then the byte split and the checkouts. TENSOR-FUNCTION i prints the tensor of edit i. A folder
# that holds a finished history already (`.history-built`, kept by history_dir=DIR) is reused:
# only the checkouts are measured again.
history_run() {
  local label=$1 n=$2 pick=$3
  if [[ -f .history-built ]]; then
    echo "== $label: reusing the history in $PWD ($(cat .history-built))"
    history_checkouts
    return
  fi
  mvc init -q model.safetensors
  local base_bytes
  base_bytes=$(du_bytes .mvc)
  local i
  if [[ $history_commit == factors ]]; then
    for ((i = 1; i <= n; i++)); do $pick "$i"; done >"$work/tensors.txt"
    local p0
    p0=$(date +%s.%N)
    python3 "$repo/scripts/bench/history_factors.py" model.safetensors "$work/factors" "$work/tensors.txt" --seed 11
    echo "(factor files for $n edits prepared in $(calc "$(date +%s.%N) - $p0") s, not counted below)"
  fi
  : >"$work/commit-times"
  local t0 TIMEFORMAT='%R %U %S' preload=()
  [[ -n ${nosync[*]} ]] && preload=(env "LD_PRELOAD=$eatmydata_lib")
  t0=$(now_us)
  i=1
  # One line per edit, "i wall user sys", from bash's `time` (the mvc process and its children).
  while ((i <= n)); do
    if [[ $history_commit == factors ]]; then
      { time LD_PRELOAD=${nosync:+$eatmydata_lib} mvc commit-factors "$work/factors/$i.safetensors" -q -m "edit $i" 2>"$work/.err" >/dev/null; } 2>>"$work/.times" || {
        cat "$work/.err" >&2
        echo "bench.sh: commit-factors of edit $i failed" >&2
        exit 1
      }
    else
      "${preload[@]}" mvc-demo-editor lowrank model.safetensors --tensor "$($pick "$i")" --rank 1 --scale 0.01 --seed "$i" >/dev/null
      { time LD_PRELOAD=${nosync:+$eatmydata_lib} mvc commit -q -m "edit $i" 2>"$work/.err" >/dev/null; } 2>>"$work/.times" || {
        cat "$work/.err" >&2
        echo "bench.sh: commit of edit $i failed" >&2
        exit 1
      }
    fi
    if (($(now_us) - t0 > history_budget * 1000000)); then
      echo "(stopped after $i edits: the ${history_budget} s budget)"
      break
    fi
    ((i++))
  done
  ((i > n)) && i=$n
  local N=$i loop
  loop=$(calc "($(now_us) - $t0) / 1000000")
  awk '{ printf "%d %s %.3f\n", NR, $1, $2 + $3 }' "$work/.times" >"$work/commit-times"
  rm -f "$work/.times"
  # revs[k]: the commit of edit k (revs[0]: init's).
  local revs
  mapfile -t revs < <(git --git-dir=.mvc rev-list --first-parent --reverse HEAD)
  rm -rf "$work/factors"
  local total cache derived own
  total=$(du_bytes .mvc)
  cache=$( (du -sb .mvc/mvc-snapshots 2>/dev/null || echo 0) | cut -f1)
  derived=$( (du -sb .mvc/mvc-cache 2>/dev/null || echo 0) | cut -f1)
  own=$((total - base_bytes - cache - derived))
  echo "== $label: $N rank-1 edits, $history_commit commits (loop ${loop} s${nosync:+, under eatmydata}; load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo ".mvc (du -sb, all files): $total B = base after init $base_bytes + commits' own $own ($((own / N)) B/edit) + keyframe cache $cache ($(ls .mvc/mvc-snapshots 2>/dev/null | wc -l) files) + mvc-cache $derived"
  echo ".mvc = base + $(calc "($total - $base_bytes) / ($own + 1)") × own (goal ≤ 1.5: $(pass "$total - $base_bytes <= 1.5 * $own")); cache / own = $(calc "$cache / ($own + 1)")"
  # Per-commit cost by depth: mean wall and CPU over each tenth of the history.
  echo "per-edit commit cost by depth (edits: mean wall s / mean cpu s):"
  awk -v n="$N" '{ b = int(($1 - 1) * 10 / n); w[b] += $2; c[b] += $3; k[b]++ }
    END { for (b = 0; b < 10; b++) if (k[b]) printf "  %d–%d: %.3f / %.3f\n", b * n / 10 + 1, (b + 1) * n / 10, w[b] / k[b], c[b] / k[b] }' "$work/commit-times"
  cp "$work/commit-times" "$results/history-commit-times-$N-$history_commit.txt"
  echo "$N edits, $history_commit commits, built $(date -u +%FT%TZ)" >.history-built
  history_checkouts
}

# trace_states FILE: the most states a tensor replayed one by one after its start, from a
# MVC_TRACE_PERFORMANCE file (0 when none).
trace_states() {
  local n
  n=$(sed -n "s/.*replay of '.*': \([0-9]*\) states after its start.*/\1/p" "$1" 2>/dev/null | sort -n | tail -1 || true)
  echo "${n:-0}"
}

# history_checkouts: in a built history (HEAD = the last edit, on its branch), cp of the model,
# then at seven depths: `checkout -o` (a whole fresh file), and the everyday in-place checkout
# (working model at HEAD → `mvc checkout EDIT` → its bytes checked → `mvc checkout BRANCH`).
history_checkouts() {
  local revs branch N
  mapfile -t revs < <(git --git-dir=.mvc rev-list --first-parent --reverse HEAD)
  N=$((${#revs[@]} - 1))
  branch=$(git --git-dir=.mvc symbolic-ref --short HEAD)
  echo "checkouts from $(date -u +%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  # cp of the model, page-cached: the floor a checkout is compared with.
  local cps=() cpus=()
  for _ in 1 2 3; do
    cpu_measure cp model.safetensors "$work/cpcheck.safetensors"
    cps+=("$secs") cpus+=("$cpu")
    rm -f "$work/cpcheck.safetensors"
  done
  local cp_s cp_cpu worst=0 worst_cpu=0 worst_in=0 worst_in_cpu=0 peak_kib=0 largest
  # The largest tensor's bytes, from the safetensors header (issue 15's memory bound).
  largest=$(python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n)); print(max(e - b for k, v in h.items() if k != "__metadata__" for b, e in [v["data_offsets"]]))' model.safetensors)
  cp_s=$(printf '%s\n' "${cps[@]}" | median) cp_cpu=$(printf '%s\n' "${cpus[@]}" | median)
  echo "cp $cp_s s (cpu $cp_cpu s)"
  local k head_sha
  head_sha=$(sha256sum model.safetensors | cut -d' ' -f1)
  for k in 1 $((N / 8)) $((N / 4)) $((N / 2)) $((3 * N / 4)) $((7 * N / 8)) $((N - 1)); do
    ((k >= 1)) || continue
    cpu_measure mvc checkout "${revs[k]}" -o "$work/out.safetensors"
    rm -f "$work/out.safetensors"
    local a=$secs ac=$cpu
    peak_kib=$(printf '%s\n' "$peak_kib" "$kib" | sort -g | tail -1)
    rm -f "$work/trace"
    cpu_measure env MVC_TRACE_PERFORMANCE="$work/trace" mvc checkout "${revs[k]}" -o "$work/out.safetensors"
    local states want
    states=$(trace_states "$work/trace")
    # checkout -o verifies every tensor's hash against the commit's: these are edit k's bytes.
    want=$(sha256sum "$work/out.safetensors" | cut -d' ' -f1)
    rm -f "$work/out.safetensors"
    echo "checkout -o edit $k (depth $((N - k)) from HEAD): first $a s (cpu $ac s), again $secs s (cpu $cpu s); most states replayed by a tensor: $states"
    worst=$(printf '%s\n' "$worst" "$a" | sort -g | tail -1)
    worst_cpu=$(printf '%s\n' "$worst_cpu" "$ac" "$cpu" | sort -g | tail -1)
    # In place: the working model is at HEAD; to edit k and back, each timed.
    rm -f "$work/trace"
    cpu_measure env MVC_TRACE_PERFORMANCE="$work/trace" mvc checkout "${revs[k]}"
    local f=$secs fc=$cpu fs rewritten
    peak_kib=$(printf '%s\n' "$peak_kib" "$kib" | sort -g | tail -1)
    fs=$(trace_states "$work/trace")
    rewritten=$(grep -o '[0-9]* tensors* rewritten.*' "$work/.out" | head -1)
    [[ $(sha256sum model.safetensors | cut -d' ' -f1) == "$want" ]] || {
      echo "bench.sh: in-place checkout of edit $k left other bytes than checkout -o" >&2
      exit 1
    }
    cpu_measure mvc checkout "$branch"
    peak_kib=$(printf '%s\n' "$peak_kib" "$kib" | sort -g | tail -1)
    [[ $(sha256sum model.safetensors | cut -d' ' -f1) == "$head_sha" ]] || {
      echo "bench.sh: checkout back to $branch left other bytes than HEAD's model" >&2
      exit 1
    }
    echo "  in place HEAD → edit $k: $f s (cpu $fc s; $rewritten; most states replayed: $fs; bytes = checkout -o's), back to $branch: $secs s (cpu $cpu s)"
    worst_in=$(printf '%s\n' "$worst_in" "$f" "$secs" | sort -g | tail -1)
    worst_in_cpu=$(printf '%s\n' "$worst_in_cpu" "$fc" "$cpu" | sort -g | tail -1)
  done
  echo "checkout -o max $worst s vs 3 × cp $(calc "3 * $cp_s") s: $(pass "$worst <= 3 * $cp_s") (wall, machine shared); max cpu $worst_cpu s vs 3 × cp's $(calc "3 * $cp_cpu") s: $(pass "$worst_cpu <= 3 * $cp_cpu")" | tee -a "$results/goals_history"
  echo "checkout in place max $worst_in s vs 3 × cp $(calc "3 * $cp_s") s: $(pass "$worst_in <= 3 * $cp_s") (wall, machine shared); max cpu $worst_in_cpu s vs 3 × cp's $(calc "3 * $cp_cpu") s: $(pass "$worst_in_cpu <= 3 * $cp_cpu")" | tee -a "$results/goals_history"
  local limit_kib=$(((2 * largest + (64 << 20)) / 1024))
  echo "peak RSS of the checkouts $((peak_kib / 1024)) MiB ≤ 2 × largest tensor ($largest B) + 64 MiB = $((limit_kib / 1024)) MiB: $(pass "$peak_kib <= $limit_kib")" | tee -a "$results/goals_history"
  echo "after the checkouts: .mvc $(du_bytes .mvc) B, cache $( (du -sb .mvc/mvc-snapshots 2>/dev/null || echo 0) | cut -f1) B"
}

# history_folder NAME: into the folder a history is built in: $history_dir/NAME when set (kept,
# and reused when it holds a finished history), else a work folder removed afterwards.
history_folder() {
  if [[ -n ${history_dir:-} ]]; then
    # A folder left by a run that did not finish its history is started again.
    [[ -f $history_dir/$1/.history-built ]] || rm -rf "${history_dir:?}/$1"
    mkdir -p "$history_dir/$1" && cd "$history_dir/$1"
  else
    mkdir -p "$work/hist" && cd "$work/hist"
  fi
}
history_leave() { cd "$work"; [[ -n ${history_dir:-} ]] || rm -rf "$work/hist"; }

if ((history_n > 0)); then
echo
history_folder bench256
[[ -f .history-built ]] || mvc-demo-editor generate model.safetensors --shape-set bench256 --seed 7 >/dev/null
pick_bench() { echo "${edit_tensor[$((($1 - 1) % 1000 + 1))]}"; }
history_run "history A: bench256 (256 MiB F32)" "$history_n" pick_bench
history_leave
fi

if ((history_small_n > 0)); then
echo
history_folder small
[[ -f .history-built ]] || mvc-demo-editor generate model.safetensors --blocks 2 --hidden 256 --intermediate 1024 --seed 3 >/dev/null
pick_two() { if (($1 % 2)); then echo model.layers.0.mlp.down_proj.weight; else echo model.layers.1.mlp.up_proj.weight; fi; }
history_run "history B: small llama (4.7 MB F32), edits on 2 tensors" "$history_small_n" pick_two
history_leave
fi
