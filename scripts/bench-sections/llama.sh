# shellcheck shell=bash
# Section 'llama' of scripts/bench.sh (sourced; uses its helpers and $work, $results): mvc on
# generated bf16 models of real Llama geometries, in 4 shards, beside cp in the same run —
# Llama-3.2-1B (3 GB, lm_head untied) and Llama-3-8B (16 GB). LLAMA_GEOMETRIES (default
# "llama3.2-1b llama3-8b") picks them. A geometry whose model does not fit in the free disk
# (model ×3: the model, .mvc, a checkout -o) or in MemAvailable (model + 1 GiB, so cp and
# checkout -o run page-cached) is skipped with the reason.
#
# Figures: wall s, CPU s (user+sys: the machine may be shared, CPU time is what load does not
# inflate), peak RSS. Goals (issue 15): init ≤ 2× cp; a one-tensor commit ≤ 1 s (8B);
# checkout -o ≤ 3× cp (1B, page-cached); peak RSS ≤ 2× the largest tensor + 64 MiB.

# lmeasure CMD...: like measure, and sets $cpu (user + sys seconds).
lmeasure() {
  /usr/bin/time -f "%e %M %U %S" -o "$work/.t" "$@" >"$work/.out" 2>&1 || {
    tail -20 "$work/.out" >&2
    echo "bench.sh: '$*' failed" >&2
    exit 1
  }
  local user sys
  read -r secs kib user sys <"$work/.t"
  cpu=$(calc "$user + $sys")
}
lrow() { printf '%-52s %8s %8s %9s %s\n' "$@"; }
shard_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['weight_map'][sys.argv[2]])" model/model.safetensors.index.json "$1"; }

for geometry in ${LLAMA_GEOMETRIES:-llama3.2-1b llama3-8b}; do
  echo
  echo "== llama: $geometry geometry, bf16, 4 shards"
  case $geometry in
    llama3-8b) need=$((16 * 1024 * 1024 * 1024)) layer=17 rows=4096 cols=14336 largest=$((128256 * 4096 * 2)) ;;
    llama3.2-1b) need=$((3 * 1024 * 1024 * 1024)) layer=8 rows=2048 cols=8192 largest=$((128256 * 2048 * 2)) ;;
    *) echo "unknown geometry $geometry"; continue ;;
  esac
  free_disk=$(($(df -B1 --output=avail "$work" | tail -1)))
  avail=$(($(awk '/MemAvailable/ { print $2 }' /proc/meminfo) * 1024))
  echo "free disk $((free_disk >> 30)) GiB, MemAvailable $((avail >> 30)) GiB"
  if ((free_disk < 3 * need + (2 << 30))); then
    echo "skipped: needs ~$(((3 * need) >> 30)) GiB of free disk (model, .mvc, a checkout -o), $((free_disk >> 30)) GiB free"
    continue
  fi
  if ((avail < need + (1 << 30))); then
    echo "skipped: needs ~$(((need >> 30) + 1)) GiB MemAvailable to run page-cached, $((avail >> 30)) GiB available"
    continue
  fi
  dir=$work/$geometry
  mkdir -p "$dir" && cd "$dir"
  lmeasure mvc-demo-editor generate-llama model --geometry "$geometry" --shards 4
  echo "generated in $secs s: $(du -sb model | cut -f1) B"
  bytes=$(du -sb model | cut -f1)
  limit_kib=$(((2 * largest + (64 << 20)) / 1024))
  lrow "operation" "wall s" "CPU s" "peak MiB" "note"
  # Each timed write starts with no dirty pages of an earlier step to flush (sync first), and
  # with the model in the page cache (just written).
  sync
  lmeasure cp -r model "$dir/copy"
  cp_s=$secs
  lrow "cp -r (page-cached)" "$secs" "$cpu" "$(mib "$kib")"
  rm -rf "$dir/copy"
  sync
  lmeasure bash -c 'cp -r model copy && sync'
  lrow "cp -r + sync" "$secs" "$cpu" "$(mib "$kib")"
  rm -rf "$dir/copy"
  sync
  lmeasure mvc init model -q
  init_s=$secs init_kib=$kib
  lrow "mvc init" "$secs" "$cpu" "$(mib "$kib")" "$(calc "$secs / $cp_s")× cp; .mvc $(file_bytes .mvc) B ($(calc "$(file_bytes .mvc) / $bytes") of the model)"
  lmeasure mvc status
  lrow "mvc status, clean" "$secs" "$cpu" "$(mib "$kib")"
  base=$(mvc_rev)
  tensor="model.layers.$layer.mlp.down_proj.weight"
  shard=$(shard_of "$tensor")
  # 1. One tensor rewritten in place (an editor patching the file): the shard's size is kept.
  mvc-demo-editor lowrank "model/$shard" --tensor "$tensor" --scale 0.01 --seed 1 --in-place >/dev/null
  lmeasure mvc status
  lrow "mvc status, one tensor rewritten in place" "$secs" "$cpu" "$(mib "$kib")"
  lmeasure mvc commit -q -m "in place"
  c1=$secs c1_kib=$kib
  lrow "mvc commit, one tensor rewritten in place" "$secs" "$cpu" "$(mib "$kib")"
  # 2. Every shard rewritten, as save_pretrained does (new files renamed over the old ones).
  mvc-demo-editor lowrank "model/$shard" --tensor "$tensor" --scale 0.01 --seed 2 >/dev/null
  for f in model/model-*.safetensors; do [[ $f == "model/$shard" ]] || install_model "$f" "$f"; done
  lmeasure mvc status
  lrow "mvc status, every shard rewritten" "$secs" "$cpu" "$(mib "$kib")"
  lmeasure mvc commit -q -m "save_pretrained"
  c2=$secs
  ((kib > c1_kib)) && c1_kib=$kib
  lrow "mvc commit, every shard rewritten" "$secs" "$cpu" "$(mib "$kib")"
  # 3. --delta (a PEFT LoRA file, rank 1) and commit-factors (the editor's factors).
  python3 "$repo/scripts/bench/llama_factors.py" "$tensor" "$rows" "$cols" 3 "$dir/lora.safetensors" "$dir/unused.safetensors"
  python3 "$repo/scripts/bench/llama_factors.py" "$tensor" "$rows" "$cols" 4 "$dir/unused.safetensors" "$dir/factors.safetensors"
  lmeasure mvc commit -q -m "delta" --delta "$dir/lora.safetensors" --scale 1
  c3=$secs
  ((kib > c1_kib)) && c1_kib=$kib
  lrow "mvc commit --delta (LoRA rank 1)" "$secs" "$cpu" "$(mib "$kib")"
  lmeasure mvc commit-factors "$dir/factors.safetensors" -m "factors" --method rome
  c4=$secs
  ((kib > c1_kib)) && c1_kib=$kib
  lrow "mvc commit-factors (rank 1)" "$secs" "$cpu" "$(mib "$kib")"
  # Checkouts: in place one edit back and forth, and -o of HEAD and of the base.
  lmeasure mvc checkout -q HEAD~1
  co_kib=$kib
  lrow "mvc checkout HEAD~1 in place (one tensor)" "$secs" "$cpu" "$(mib "$kib")"
  lmeasure mvc checkout -q main
  ((kib > co_kib)) && co_kib=$kib
  lrow "mvc checkout main in place (one tensor)" "$secs" "$cpu" "$(mib "$kib")"
  lmeasure mvc checkout -q "$base"
  ((kib > co_kib)) && co_kib=$kib
  lrow "mvc checkout base in place (4 edits back)" "$secs" "$cpu" "$(mib "$kib")"
  mvc switch -q main
  sync
  lmeasure mvc checkout main -o "$dir/out"
  o1=$secs
  ((kib > co_kib)) && co_kib=$kib
  lrow "mvc checkout main -o (copies, page-cached)" "$secs" "$cpu" "$(mib "$kib")" "$(calc "$secs / $cp_s")× cp"
  rm -rf "$dir/out"
  o2=$o1
  if [[ $geometry != llama3-8b ]]; then # at 16 GB, the two -o runs below say enough
    sync
    lmeasure mvc checkout "$base" -o "$dir/out"
    o2=$secs
    ((kib > co_kib)) && co_kib=$kib
    lrow "mvc checkout base -o (copies + rebuilds)" "$secs" "$cpu" "$(mib "$kib")" "$(calc "$secs / $cp_s")× cp"
    rm -rf "$dir/out"
  fi
  mv model model.away
  sync
  lmeasure mvc checkout "$base" -o "$dir/out"
  o3=$secs
  ((kib > co_kib)) && co_kib=$kib
  lrow "mvc checkout base -o, no working model (decompress)" "$secs" "$cpu" "$(mib "$kib")" "$(calc "$secs / $cp_s")× cp"
  rm -rf "$dir/out"
  mv model.away model
  echo ".mvc after 4 edits: $(file_bytes .mvc) B (snapshot cache $(cache_bytes .mvc) B)"
  one=$(printf '%s\n' "$c1" "$c3" "$c4" | maxof)
  {
    echo "$geometry init $init_s s ≤ 2 × cp $cp_s s: $(pass "$init_s <= 2 * $cp_s")"
    echo "$geometry one-tensor commits (in place, --delta, commit-factors) max $one s ≤ 1 s: $(pass "$one <= 1")"
    echo "$geometry checkout -o max $(printf '%s\n' "$o1" "$o2" "$o3" | maxof) s ≤ 3 × cp $cp_s s: $(pass "$(printf '%s\n' "$o1" "$o2" "$o3" | maxof) <= 3 * $cp_s")"
    echo "$geometry peak RSS init $(mib "$init_kib"), commits $(mib "$c1_kib"), checkouts $(mib "$co_kib") MiB ≤ 2 × largest tensor + 64 MiB = $((limit_kib / 1024)) MiB: $(pass "$init_kib <= $limit_kib && $c1_kib <= $limit_kib && $co_kib <= $limit_kib")"
  } | tee -a "$results/goals_llama"
  echo "(save_pretrained-style commit $c2 s, not a goal of its own)"
  cd "$work" && rm -rf "$dir"
done
