#!/usr/bin/env bash
# mvc benchmark: storage, commit, checkout, bisect and peak memory of mvc against git + git-lfs,
# git-theta, a plain cp and the raw factor bytes, all measured in one run on this machine.
#
# Usage: scripts/bench.sh [--all | --solvers | --sections LIST] [--long N] [--keep]
#   sections (comma-separated, run in this order):
#     table   bench256 model (256 MiB F32), 20 rank-1 edits: mvc, git-lfs, git-theta, cp, raw factors
#     solvers Swift EditSolvers (mvc-demo-editor bench-solvers) beside numpy (scripts/bench_solvers.py)
#     long    mvc alone, N sequential rank-1 edits (default 1000; 300 when 1000 would take > 15 min)
#     gpt2xl  48 × 1600×6400 F32 (~2 GB), 5 edits: mvc and cp
#     sequential  1000 AlphaEdit/ENCORE/MEMIT edits (seq_n=N to change): retention and collapse signals
#     transfer bench256 + 5 edits: gc, push, clone over file:// and git:// (git daemon), beside cp -r .mvc
#     bisect-parallel  1,000 commits, 5 s evaluation: bisect run --jobs 1/3/7, local and srun (bench-sections/)
#     llama   Llama-3.2-1B and Llama-3-8B geometries (bf16, 4 shards, 3 and 16 GB): mvc and cp (bench-sections/)
#     history .mvc bytes whole (base, commits, keyframe cache) and checkout by depth: bench256 ×
#             history_n=1000 edits, small model × history_small_n=10000 on 2 tensors (env vars;
#             history_budget=1800 s per loop; history_dir=DIR keeps and reuses the histories);
#             -o and in-place checkouts — scripts/bench-sections/history.sh
#     edits   rank-one bf16/fp16/fp32 edits of Llama down-projections, full-model commits (bench-sections/edits.sh)
#     base-store  real MiniLM fp32/bf16: .mvc after init beside ZipNN (bench-sections/base-store.sh)
#     emmet-batch EMMET_N (10,000) EMMET edits of 1600×6400: bytes and float64 error (bench-sections/emmet-batch.sh)
#   default: table,long,gpt2xl; --solvers: solvers only; --all: table,solvers,long,gpt2xl,transfer,edits.
# Work files go to /tmp/mvc-bench.XXXXXX, removed at exit (--keep leaves them). git-theta is installed
# with pip into ~/.cache/mvc-bench/gittheta (a venv) the first time.
set -euo pipefail

sections=table,long,gpt2xl long_n=1000 keep=0
while (($#)); do
  case $1 in
    --all) sections=table,solvers,long,gpt2xl,transfer,edits ;;
    --solvers) sections=solvers ;;
    --sections) sections=$2; shift ;;
    --long) long_n=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 129 ;;
  esac
  shift
done
has() { [[ ,$sections, == *,$1,* ]]; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/setup.sh >/dev/null
for pkg in time git-lfs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
done
swift build -c release --product mvc 2>&1 | tail -1
swift build -c release --product mvc-demo-editor 2>&1 | tail -1
bin=$(swift build -c release --show-bin-path)
export PATH="$bin:$PATH"

work=$(mktemp -d /tmp/mvc-bench.XXXXXX)
((keep)) || trap 'rm -rf "$work"' EXIT
export HOME_ORIG=$HOME
results=$work/results
mkdir -p "$results"

# ---- helpers ---------------------------------------------------------------------------------
# measure CMD...: runs CMD under /usr/bin/time; sets $secs and $kib (peak RSS of the largest process).
measure() {
  /usr/bin/time -f "%e %M" -o "$work/.t" "$@" >"$work/.out" 2>&1 || {
    tail -20 "$work/.out" >&2
    echo "bench.sh: '$*' failed" >&2
    exit 1
  }
  read -r secs kib <"$work/.t"
}
# Repository bytes leave out mvc's local keyframe cache (.mvc/mvc-snapshots: never pushed, capped,
# trimmed by 'mvc gc'), which is reported on its own; the history section counts it in du -sb .mvc.
file_bytes() { find "$1" -type f -not -path '*/mvc-snapshots/*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
cache_bytes() { find "$1/mvc-snapshots" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
du_bytes() { du -sb "$1" | cut -f1; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
maxof() { sort -g | tail -1; }
calc() { awk "BEGIN { printf \"%.4g\", $* }"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
pass() { awk "BEGIN { exit !($*) }" && echo PASS || echo FAIL; }
install_model() { cp "$1" "$2.tmp" && mv -f "$2.tmp" "$2"; } # like an editor: new file renamed over
mvc_rev() { git --git-dir=.mvc rev-parse HEAD; }

echo "== machine"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu; nproc $(nproc); $(free -g | awk '/Mem:/ { print $2 " GiB RAM" }'); kernel $(uname -r)"
echo "OPENBLAS_CORETYPE in this shell: ${OPENBLAS_CORETYPE:-(unset)} (the script exports nothing)"
echo "OpenBLAS kernel mvc runs with (OPENBLAS_VERBOSE=2 mvc --version; first line before mvc's re-exec):"
OPENBLAS_VERBOSE=2 mvc --version 2>&1 | grep -i core | sed 's/^/  /'
echo "mvc $(mvc --version); $(git --version); $(git lfs version)"

# 20 rank-1 edit choices, the same for every tool (bench_core.sh's sequence).
RANDOM=2024
edit_tensor=() edit_seed=()
for i in $(seq 1 1000); do
  block=$((RANDOM % 8))
  if ((RANDOM % 2)); then kind=down_proj; else kind=up_proj; fi
  edit_tensor[i]="model.layers.$block.mlp.$kind.weight" edit_seed[i]=$i
done

# ---- section: table ----------------------------------------------------------------------------
if has table; then
  N=20
  echo
  echo "== bench256 (8 × [4096×1024, 1024×4096] F32), $N sequential rank-1 edits, ‖uvᵀ‖ = 1% of ‖W‖"
  mkdir -p "$work/v"
  cd "$work/v"
  mvc-demo-editor generate base.safetensors --shape-set bench256 --seed 7 >/dev/null
  model_bytes=$(stat -c %s base.safetensors)
  cp base.safetensors cur.safetensors
  edit_secs=()
  for i in $(seq 1 $N); do
    measure mvc-demo-editor lowrank cur.safetensors --tensor "${edit_tensor[i]}" --rank 1 --scale 0.01 --seed "${edit_seed[i]}"
    edit_secs+=("$secs")
    cp cur.safetensors "v$i.safetensors"
  done
  cp base.safetensors v0.safetensors
  rm cur.safetensors
  edit_med=$(printf '%s\n' "${edit_secs[@]}" | median)
  sync

  # cp: the floor.
  cp_t=()
  for i in 1 2 3; do
    measure cp v$N.safetensors cp_copy.safetensors
    cp_t+=("$secs") cp_kib=$kib
    rm cp_copy.safetensors
  done
  cp_secs=$(printf '%s\n' "${cp_t[@]}" | median)
  # cp + fsync of the copy: what a checkout that makes its output durable (mvc fsyncs before the
  # rename, as git does for its objects) is up against.
  cps_t=()
  for i in 1 2 3; do
    measure sh -c "cp v$N.safetensors cp_copy.safetensors && sync cp_copy.safetensors"
    cps_t+=("$secs")
    rm cp_copy.safetensors
  done
  cp_sync_secs=$(printf '%s\n' "${cps_t[@]}" | median)

  # -- mvc
  mkdir -p "$work/mvc" && cd "$work/mvc"
  cp "$work/v/v0.safetensors" model.safetensors
  measure mvc init model.safetensors
  mvc_init_secs=$secs mvc_init_kib=$kib
  init_files=$(file_bytes .mvc)
  revs=("$(mvc_rev)")
  mvc_commit=() mvc_commit_kib=0
  for i in $(seq 1 $N); do
    install_model "$work/v/v$i.safetensors" model.safetensors
    measure mvc commit -q -m "edit $i: rank-1 on ${edit_tensor[i]}"
    mvc_commit+=("$secs")
    ((kib > mvc_commit_kib)) && mvc_commit_kib=$kib
    revs+=("$(mvc_rev)")
  done
  mvc_bytes=$(file_bytes .mvc) mvc_du=$(du_bytes .mvc)
  mvc_growth=$(((mvc_bytes - init_files) / N))
  mvc_cmed=$(printf '%s\n' "${mvc_commit[@]}" | median) mvc_cmax=$(printf '%s\n' "${mvc_commit[@]}" | maxof)
  mid=$((N / 2))
  declare -A mvc_co mvc_coo
  mvc_co_kib=0
  for k in 1 $mid $N; do
    measure mvc checkout "${revs[k]}" -o "$work/out.safetensors"
    mvc_coo[$k]=$secs
    ((kib > mvc_co_kib)) && mvc_co_kib=$kib
    cmp -s "$work/out.safetensors" "$work/v/v$k.safetensors" || echo "WARNING: mvc checkout -o of edit $k is not byte-identical" >&2
    rm -f "$work/out.safetensors"
  done
  for k in 1 $mid $N; do
    measure mvc checkout -q "${revs[k]}"
    mvc_co[$k]=$secs
    ((kib > mvc_co_kib)) && mvc_co_kib=$kib
    cmp -s model.safetensors "$work/v/v$k.safetensors" || echo "WARNING: mvc checkout of edit $k is not byte-identical" >&2
  done
  measure mvc checkout -q "${revs[N - 1]}"
  measure mvc checkout -q "${revs[N]}" # exactly one tensor differs
  mvc_one=$secs
  ((kib > mvc_co_kib)) && mvc_co_kib=$kib
  mvc switch -q main
  mvc bisect start -q main "${revs[0]}" >/dev/null
  mvc_bisect=()
  for step in 1 2 3 4 5 6 7; do
    measure mvc bisect good
    mvc_bisect+=("$secs")
    ((kib > mvc_co_kib)) && mvc_co_kib=$kib
    grep -qi "first bad\|is the culprit\|found" "$work/.out" && break
  done
  mvc bisect reset -q >/dev/null 2>&1 || true
  mvc_bisect_first=${mvc_bisect[0]} mvc_bisect_last=${mvc_bisect[-1]}
  mvc_bisect_med=$(printf '%s\n' "${mvc_bisect[@]}" | median)

  # -- git + git-lfs: the full safetensors at every commit
  mkdir -p "$work/lfs" && cd "$work/lfs"
  git init -q -b main . && git config user.email bench@example.com && git config user.name bench
  git lfs install --local >/dev/null && git lfs track "*.safetensors" >/dev/null
  cp "$work/v/v0.safetensors" model.safetensors
  measure sh -c 'git add .gitattributes model.safetensors && git commit -q -m base'
  lfs_init_secs=$secs
  lfs_revs=("$(git rev-parse HEAD)")
  lfs_commit=() lfs_commit_kib=0
  for i in $(seq 1 $N); do
    install_model "$work/v/v$i.safetensors" model.safetensors
    measure sh -c "git add model.safetensors && git commit -q -m 'edit $i'"
    lfs_commit+=("$secs")
    ((kib > lfs_commit_kib)) && lfs_commit_kib=$kib
    lfs_revs+=("$(git rev-parse HEAD)")
  done
  lfs_bytes=$(du_bytes .git)
  lfs_cmed=$(printf '%s\n' "${lfs_commit[@]}" | median)
  declare -A lfs_co
  lfs_co_kib=0
  for k in 1 $mid $N; do
    measure git checkout -q "${lfs_revs[k]}" -- model.safetensors
    lfs_co[$k]=$secs
    ((kib > lfs_co_kib)) && lfs_co_kib=$kib
  done
  git checkout -q "${lfs_revs[N - 1]}" -- model.safetensors
  measure git checkout -q "${lfs_revs[N]}" -- model.safetensors
  lfs_one=$secs
  measure git checkout -q "${lfs_revs[mid]}" # what a bisect step does
  lfs_bisect=$secs
  git checkout -q main

  # -- git-theta 0.2.0 (safetensors extra), low-rank updates side-loaded with --update-data
  theta_ok=0 theta_note=""
  venv=$HOME_ORIG/.cache/mvc-bench/gittheta
  if [[ ! -x $venv/bin/git-theta ]]; then
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "git-theta[safetensors]==0.2.0"; } >"$work/theta-install.log" 2>&1 ||
      theta_note="pip install git-theta[safetensors]==0.2.0 failed: $(tail -1 "$work/theta-install.log")"
  fi
  if [[ -x $venv/bin/git-theta ]]; then
    mkdir -p "$work/theta/home" && cd "$work/theta"
    (
      export HOME=$work/theta/home PATH=$venv/bin:$PATH GIT_THETA_CHECKPOINT_TYPE=safetensors
      git config --global user.email bench@example.com && git config --global user.name bench
      git theta install >/dev/null 2>&1
      git init -q -b main . && git lfs install --local >/dev/null
      cp "$work/v/v0.safetensors" model.safetensors
      git theta track model.safetensors >/dev/null 2>&1
      measure sh -c 'git theta add model.safetensors >/dev/null 2>&1 && git commit -q -m base >/dev/null 2>&1'
      echo "init $secs $kib" >"$results/theta"
      trevs=("$(git rev-parse HEAD)")
      for i in $(seq 1 $N); do
        "$venv/bin/python" "$repo/scripts/bench/theta_factors.py" "$work/v/v$((i - 1)).safetensors" \
          "$work/v/v$i.safetensors" "$work/theta-update.safetensors"
        install_model "$work/v/v$i.safetensors" model.safetensors
        measure sh -c "git theta add model.safetensors --update-type low-rank --update-data '$work/theta-update.safetensors' >/dev/null 2>&1 && git commit -q -m 'edit $i' >/dev/null 2>&1"
        echo "commit $secs $kib" >>"$results/theta"
        trevs+=("$(git rev-parse HEAD)")
      done
      echo "bytes $(du_bytes .git) 0" >>"$results/theta"
      for k in 1 $mid $N; do
        measure git checkout -q "${trevs[k]}" -- model.safetensors
        echo "co$k $secs $kib" >>"$results/theta"
      done
      git checkout -q "${trevs[N - 1]}" -- model.safetensors
      measure git checkout -q "${trevs[N]}" -- model.safetensors
      echo "one $secs $kib" >>"$results/theta"
      measure git checkout -q "${trevs[mid]}"
      echo "bisect $secs $kib" >>"$results/theta"
    ) && theta_ok=1 || theta_note="git-theta run failed (see above)"
  fi
  if ((theta_ok)); then
    th() { awk -v k="$1" '$1 == k { print $2 }' "$results/theta"; }
    thk() { awk -v k="$1" '$1 == k { print $3 }' "$results/theta"; }
    theta_bytes=$(th bytes)
    theta_cmed=$(awk '$1 == "commit" { print $2 }' "$results/theta" | median)
    theta_ckib=$(awk '$1 == "commit" { print $3 }' "$results/theta" | maxof)
    theta_cokib=$(awk '$1 ~ /^co|^one|^bisect/ { print $3 }' "$results/theta" | maxof)
  fi
  cd "$work"

  raw=$(((4096 + 1024) * 4))
  elems=$((4096 * 1024))
  echo
  echo "Model: $model_bytes bytes F32; editor rewrite (mvc-demo-editor lowrank) median $edit_med s"
  echo "mvc init: $mvc_init_secs s, peak $(mib "$mvc_init_kib") MiB; .mvc after init $init_files file bytes; git-lfs base commit $lfs_init_secs s"
  echo
  printf '%-26s %14s %12s %9s %11s %9s %9s %9s %10s %10s %9s %9s\n' \
    "row (N=$N)" "repo bytes" "growth/edit" "commit s" "commit MiB" "co 1st s" "co mid s" "co last s" "co 1-tensor" "bisect s" "co MiB" "co -o s"
  row() { printf '%-26s %14s %12s %9s %11s %9s %9s %9s %10s %10s %9s %9s\n' "$@"; }
  row "mvc" "$mvc_bytes" "$mvc_growth" "$mvc_cmed" "$(mib $mvc_commit_kib)" "${mvc_co[1]}" "${mvc_co[$mid]}" "${mvc_co[$N]}" "$mvc_one" "$mvc_bisect_med" "$(mib $mvc_co_kib)" "${mvc_coo[$N]}"
  row "git + git-lfs" "$lfs_bytes" "$(((lfs_bytes) / (N + 1)))" "$lfs_cmed" "$(mib $lfs_commit_kib)" "${lfs_co[1]}" "${lfs_co[$mid]}" "${lfs_co[$N]}" "$lfs_one" "$lfs_bisect" "$(mib $lfs_co_kib)" "-"
  if ((theta_ok)); then
    row "git-theta (low-rank)" "$theta_bytes" "$((theta_bytes / (N + 1)))" "$theta_cmed" "$(mib "$theta_ckib")" "$(th co1)" "$(th co$mid)" "$(th co$N)" "$(th one)" "$(th bisect)" "$(mib "$theta_cokib")" "-"
  else
    row "git-theta" "unavailable" "" "" "" "" "" "" "" "" "" ""
    echo "  git-theta: $theta_note"
  fi
  row "cp (full copy per edit)" "$(((N + 1) * model_bytes))" "$model_bytes" "$cp_secs" "$(mib $cp_kib)" "$cp_secs" "$cp_secs" "$cp_secs" "$cp_secs" "$cp_secs" "$(mib $cp_kib)" "$cp_secs"
  row "raw fp32 factors" "$((N * raw))" "$raw" "" "" "" "" "" "" "" "" ""
  echo "(repo bytes: mvc = file bytes of .mvc without the snapshot cache ($(cache_bytes .mvc) B), du -sb $mvc_du; others du -sb .git incl. LFS objects. growth/edit: mvc = (after − after init)/N;"
  echo " git-lfs, git-theta = bytes/(N+1) commits. co = checkout in place of the 1st/middle/last edit; co 1-tensor = from edit N−1 to N;"
  echo " bisect: mvc = median of $((${#mvc_bisect[@]})) 'mvc bisect good' steps (first ${mvc_bisect_first}s, last ${mvc_bisect_last}s), git = git checkout <mid>."
  echo " mvc checkout -o: 1st ${mvc_coo[1]} s, mid ${mvc_coo[$mid]} s, last ${mvc_coo[$N]} s. MiB = peak RSS, /usr/bin/time %M.)"
  echo
  echo "ratios mvc / row        bytes      commit   co last   bisect"
  ratio_row() { printf '%-22s %9s %10s %9s %9s\n' "$1" "$(calc "$mvc_bytes / $2")" "$(calc "$mvc_cmed / ($3 > 0 ? $3 : 0.01)")" "$(calc "${mvc_co[$N]} / ($4 > 0 ? $4 : 0.01)")" "$(calc "$mvc_bisect_med / ($5 > 0 ? $5 : 0.01)")"; }
  ratio_row "git + git-lfs" "$lfs_bytes" "$lfs_cmed" "${lfs_co[$N]}" "$lfs_bisect"
  ((theta_ok)) && ratio_row "git-theta" "$theta_bytes" "$theta_cmed" "$(th co$N)" "$(th bisect)"
  ratio_row "cp" "$(((N + 1) * model_bytes))" "$cp_secs" "$cp_secs" "$cp_secs"
  printf '%-22s %9s\n' "raw factors (growth)" "$(calc "$mvc_growth / $raw")"
  echo "(times at 0.00 s are counted as 0.01 s)"

  limit_growth=$((raw + elems / 16))
  co_max=$(printf '%s\n' "${mvc_co[1]}" "${mvc_co[$mid]}" "${mvc_co[$N]}" "${mvc_coo[1]}" "${mvc_coo[$mid]}" "${mvc_coo[$N]}" | maxof)
  mem_limit=$((2 * 16 * 1024 + 64 * 1024))
  full_co=${mvc_coo[$N]}
  {
    echo "G1 growth per rank-1 edit $mvc_growth B ≤ raw $raw B + 0.5 bit × $elems = $limit_growth B: $(pass "$mvc_growth <= $limit_growth")"
    echo "G2 checkout (max of first/mid/last, in place and -o) $co_max s ≤ 2 × cp $cp_secs s (N=20): $(pass "$co_max <= 2 * $cp_secs"); ≤ 2 × (cp + fsync) $cp_sync_secs s: $(pass "$co_max <= 2 * $cp_sync_secs")"
    co_in_place_max=$(printf '%s\n' "${mvc_co[1]}" "${mvc_co[$mid]}" "${mvc_co[$N]}" | maxof)
    echo "   in place only (max of first/mid/last) $co_in_place_max s: ≤ 2 × cp $(pass "$co_in_place_max <= 2 * $cp_secs"), ≤ 2 × (cp + fsync) $(pass "$co_in_place_max <= 2 * $cp_sync_secs")"
    echo "G3 commit median $mvc_cmed s (max $mvc_cmax s) ≤ 3 × cp $cp_secs s: median $(pass "$mvc_cmed <= 3 * $cp_secs"), max $(pass "$mvc_cmax <= 3 * $cp_secs")"
    echo "G4 checkout when 1 tensor differs $mvc_one s ≤ 0.2 × full checkout -o $full_co s: $(pass "$mvc_one <= 0.2 * $full_co"); last bisect step $mvc_bisect_last s: $(pass "$mvc_bisect_last <= 0.2 * $full_co")"
    echo "G5 peak RSS commit $(mib $mvc_commit_kib) MiB, checkout $(mib $mvc_co_kib) MiB ≤ 2 × 16 MiB + 64 MiB = 96 MiB: commit $(pass "$mvc_commit_kib <= $mem_limit"), checkout $(pass "$mvc_co_kib <= $mem_limit")"
  } | tee "$results/goals20"
  echo "$cp_secs $edit_med $mvc_cmed" >"$results/cp20"
  rm -rf "$work/v" "$work/lfs" "$work/theta" "$work/theta-update.safetensors"
fi

# ---- section: solvers --------------------------------------------------------------------------
if has solvers; then
  echo
  echo "== closed-form solvers at GPT-2 XL MLP shape (W 1600×6400, C0 from 8000 random keys)"
  mvc-demo-editor bench-solvers --methods rome,emmet,memit --sizes 1,100,1000,10000 --tsv >"$results/swift" &
  wait $!
  # numpy: its own (newer) OpenBLAS picks its kernel itself; OPENBLAS_CORETYPE/L2_SIZE unset for it alone.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 scripts/bench_solvers.py --sizes 1,100,1000,10000 >"$results/numpy"
  head -3 "$results/numpy" | sed 's/^/numpy: /'
  echo "Swift: OpenBLAS $(OPENBLAS_VERBOSE=2 mvc-demo-editor --help 2>&1 | grep -i core | tail -1), Debian libopenblas0 $(dpkg-query -W -f '${Version}' libopenblas0-pthread 2>/dev/null || dpkg-query -W -f '${Version}' libopenblas0 2>/dev/null)"
  printf '%-6s %6s | %10s %12s | %10s %12s | %8s\n' method n "Swift s" "Swift MiB" "numpy s" "numpy MiB" "Swift/np"
  while IFS=$'\t' read -r m n s rss rank; do
    np=$(awk -v m="$m" -v n="$n" '$1 == m && $2 == n { print $5, $7 }' "$results/numpy")
    read -r nps nprss <<<"${np:-- -}"
    if [[ $rss == "" ]]; then
      printf '%-6s %6s | %s\n' "$m" "$n" "$s"
      continue
    fi
    r=$( [[ $nps != - ]] && calc "$s / $nps" || echo -)
    printf '%-6s %6s | %10s %12s | %10s %12s | %8s\n' "$m" "$n" "$s" "$rss" "$nps" "$nprss" "$r"
  done <"$results/swift"
  echo "(Swift s = EditSolvers.solve alone; numpy s = W0K + solve; peak RSS of a process running one row, incl. W0 and C0)"
fi

# ---- section: long -----------------------------------------------------------------------------
if has long; then
  echo
  mkdir -p "$work/long" && cd "$work/long"
  mvc-demo-editor generate model.safetensors --shape-set bench256 --seed 7 >/dev/null
  cp model.safetensors "$work/long-base.safetensors"
  measure cp model.safetensors "$work/cpcheck.safetensors"
  cp_long=$secs
  rm "$work/cpcheck.safetensors"
  measure sh -c "cp model.safetensors '$work/cpcheck.safetensors' && sync '$work/cpcheck.safetensors'"
  cp_sync_long=$secs
  rm "$work/cpcheck.safetensors"
  mvc init -q model.safetensors
  init_files=$(file_bytes .mvc)
  lrevs=("$(mvc_rev)")
  commits=()
  probe=10 target=$long_n
  t0=$(date +%s.%N)
  i=1
  while ((i <= target)); do
    mvc-demo-editor lowrank model.safetensors --tensor "${edit_tensor[i]}" --rank 1 --scale 0.01 --seed "${edit_seed[i]}" >/dev/null
    s0=$(date +%s.%N)
    mvc commit -q -m "edit $i"
    commits+=("$(calc "$(date +%s.%N) - $s0")")
    lrevs+=("$(mvc_rev)")
    if ((i == probe)); then
      per=$(calc "($(date +%s.%N) - $t0) / $probe")
      est=$(calc "$per * $long_n")
      if awk "BEGIN { exit !($est > 900) }"; then
        target=300
        echo "(1000 edits would take ~${est} s at ${per} s per edit + commit: running 300 instead)"
      fi
    fi
    ((i++))
  done
  loop_secs=$(calc "$(date +%s.%N) - $t0")
  N=$target mid=$((target / 2))
  echo "== mvc alone, bench256, $N sequential rank-1 edits (editor + commit loop: $loop_secs s)"
  bytes=$(file_bytes .mvc)
  echo "repository: $bytes file bytes ($(du_bytes .mvc) du -sb .mvc, of which snapshot cache $(cache_bytes .mvc)); growth per edit $(((bytes - init_files) / N)) B; commit median $(printf '%s\n' "${commits[@]}" | median) s, max $(printf '%s\n' "${commits[@]}" | maxof) s; cp $cp_long s"
  long_co_max=0 long_kib=0
  for k in 1 $mid $N; do
    measure mvc checkout "${lrevs[k]}" -o "$work/out.safetensors"
    a=$secs
    ((kib > long_kib)) && long_kib=$kib
    rm -f "$work/out.safetensors"
    measure mvc checkout -q "${lrevs[k]}"
    ((kib > long_kib)) && long_kib=$kib
    echo "checkout edit $k: -o $a s, in place $secs s"
    long_co_max=$(printf '%s\n' "$long_co_max" "$a" "$secs" | maxof)
  done
  measure mvc checkout -q "${lrevs[N - 1]}"
  measure mvc checkout -q "${lrevs[N]}"
  echo "checkout in place, 1 tensor differs (edit $((N - 1)) → $N): $secs s"
  mvc switch -q main
  mvc bisect start -q main "${lrevs[0]}" >/dev/null
  measure mvc bisect good
  b1=$secs
  measure mvc bisect good
  echo "bisect steps (mvc bisect good): $b1 s, $secs s; peak RSS of checkouts/bisect $(mib $long_kib) MiB"
  mvc bisect reset -q >/dev/null 2>&1 || true
  g=$(((bytes - init_files) / N)) lim=$(((4096 + 1024) * 4 + 4096 * 1024 / 16))
  echo "G1 growth per rank-1 edit (N=$N) $g B ≤ $lim B: $(pass "$g <= $lim")"
  echo "G2 checkout (N=$N) max $long_co_max s ≤ 2 × cp $cp_long s: $(pass "$long_co_max <= 2 * $cp_long"); ≤ 2 × (cp + fsync) $cp_sync_long s: $(pass "$long_co_max <= 2 * $cp_sync_long")" | tee "$results/goals_long"
  cd "$work" && rm -rf "$work/long" "$work/long-base.safetensors"
fi

# ---- section: history (scripts/bench-sections/history.sh) ---------------------------------------
if has history; then source "$repo/scripts/bench-sections/history.sh"; fi

# ---- section: gpt2xl ---------------------------------------------------------------------------
if has gpt2xl; then
  echo
  echo "== gpt2xl shape set (48 × 6400×1600 F32), 5 rank-1 edits"
  mkdir -p "$work/xl" && cd "$work/xl"
  measure mvc-demo-editor generate model.safetensors --shape-set gpt2xl --seed 11
  gen=$secs
  xl_bytes=$(stat -c %s model.safetensors)
  sync
  measure cp model.safetensors "$work/xl-copy.safetensors"
  xl_cp=$secs xl_cp_kib=$kib
  measure mvc init model.safetensors
  xl_init=$secs xl_init_kib=$kib
  init_files=$(file_bytes .mvc)
  xrevs=("$(mvc_rev)")
  xc=() xc_kib=0
  for i in 1 2 3 4 5; do
    t=$(((i * 7) % 48))
    mvc-demo-editor lowrank model.safetensors --tensor "transformer.h.$t.mlp.c_proj.weight" --rank 1 --scale 0.01 --seed "$i" >/dev/null
    measure mvc commit -q -m "edit $i"
    xc+=("$secs")
    ((kib > xc_kib)) && xc_kib=$kib
    xrevs+=("$(mvc_rev)")
  done
  xl_files=$(file_bytes .mvc)
  measure mvc checkout "${xrevs[1]}" -o "$work/xl-out.safetensors"
  xo1=$secs xo_kib=$kib
  rm -f "$work/xl-out.safetensors"
  measure mvc checkout "${xrevs[5]}" -o "$work/xl-out.safetensors"
  xo5=$secs
  ((kib > xo_kib)) && xo_kib=$kib
  rm -f "$work/xl-out.safetensors"
  measure mvc checkout -q "${xrevs[1]}"
  xi1=$secs
  ((kib > xo_kib)) && xo_kib=$kib
  measure mvc checkout -q "${xrevs[5]}"
  xi5=$secs
  ((kib > xo_kib)) && xo_kib=$kib
  mvc switch -q main
  printf '%-40s %10s %10s\n' "operation (model $xl_bytes B)" "time s" "peak MiB"
  printf '%-40s %10s %10s\n' "generate (mvc-demo-editor)" "$gen" ""
  printf '%-40s %10s %10s\n' "cp" "$xl_cp" "$(mib $xl_cp_kib)"
  printf '%-40s %10s %10s\n' "mvc init" "$xl_init" "$(mib $xl_init_kib)"
  printf '%-40s %10s %10s\n' "mvc commit, rank-1 (median of 5)" "$(printf '%s\n' "${xc[@]}" | median)" "$(mib $xc_kib)"
  printf '%-40s %10s %10s\n' "mvc checkout -o edit 1 / edit 5" "$xo1 / $xo5" "$(mib $xo_kib)"
  printf '%-40s %10s %10s\n' "mvc checkout in place edit 1 / edit 5" "$xi1 / $xi5" ""
  echo "repository: after init $init_files B, after 5 edits $xl_files B (growth per edit $(((xl_files - init_files) / 5)) B)"
  xl_limit=$((2 * 6400 * 1600 * 4 / 1024 + 64 * 1024))
  xcmed=$(printf '%s\n' "${xc[@]}" | median)
  g=$(((xl_files - init_files) / 5)) lim=$(((6400 + 1600) * 4 + 6400 * 1600 / 16))
  echo "G1 growth per rank-1 edit $g B ≤ $lim B: $(pass "$g <= $lim")"
  echo "G3 commit median $xcmed s ≤ 3 × cp $xl_cp s: $(pass "$xcmed <= 3 * $xl_cp")"
  echo "G2 checkout max $(printf '%s\n' "$xo1" "$xo5" "$xi1" "$xi5" | maxof) s ≤ 2 × cp: $(pass "$(printf '%s\n' "$xo1" "$xo5" "$xi1" "$xi5" | maxof) <= 2 * $xl_cp")"
  echo "G5 peak RSS commit $(mib $xc_kib) MiB, checkout $(mib $xo_kib) MiB ≤ 2 × 39 MiB + 64 MiB = $((xl_limit / 1024)) MiB: commit $(pass "$xc_kib <= $xl_limit"), checkout $(pass "$xo_kib <= $xl_limit")"
  cd "$work" && rm -rf "$work/xl" "$work/xl-copy.safetensors"
fi

# ---- section: sequential (body in scripts/bench-sections/sequential.sh) -------------------------
if has sequential; then cd "$repo" && source scripts/bench-sections/sequential.sh; fi
if has transfer; then source "$repo/scripts/bench-sections/transfer.sh"; fi
if has bisect-parallel; then source "$repo/scripts/bench-sections/bisect-parallel.sh"; fi
if has llama; then source "$repo/scripts/bench-sections/llama.sh"; fi
if has edits; then source "$repo/scripts/bench-sections/edits.sh"; edits_section; fi
for section in base-store emmet-batch; do
  if has $section; then source "$repo/scripts/bench-sections/$section.sh"; fi
done
