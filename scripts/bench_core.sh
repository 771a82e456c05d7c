#!/usr/bin/env bash
# Core costs of mvc on a 256 MiB F32 model (8 blocks of up [4096,1024] + down [1024,4096]):
# init, 20 rank-1 edits committed one by one, checkouts, peak RSS and bytes stored per edit.
# Usage: scripts/bench_core.sh   (work files go to a temporary folder under /tmp, removed at exit)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/setup.sh
swift build -c release --product mvc 2>&1 | tail -1
swift build -c release --product mvc-demo-editor 2>&1 | tail -1
bin=$(swift build -c release --show-bin-path)
export PATH="$bin:$PATH"
if [[ -z ${OPENBLAS_CORETYPE:-} ]] && flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null); then
  if [[ $flags == *avx512f* && $flags == *avx512bw* && $flags == *avx512dq* && $flags == *avx512vl* && $flags == *avx512cd* ]]; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif [[ $flags == *avx2* && $flags == *fma* ]]; then
    export OPENBLAS_CORETYPE=Haswell
  fi
fi

work=$(mktemp -d /tmp/mvc-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

# measure NAME CMD...: runs CMD under /usr/bin/time; sets $secs and $kib, appends to $work/times.
measure() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/.t" "$@" >"$work/.out" 2>&1 || {
    cat "$work/.out" >&2
    echo "bench_core.sh: '$*' failed" >&2
    exit 1
  }
  read -r secs kib <"$work/.t"
  echo "$name $secs $kib" >>"$work/times"
}
# du -sb also counts each objects/xx/ fan-out directory (4 KiB apiece); file bytes do not.
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
stored_kib() { mvc log --stat -n 1 "$@" | sed -n 's/.* changed, \([0-9.]*\) \(KiB\|MiB\|B\) stored.*/\1 \2/p'; }

echo "generating bench256 in $work"
mvc-demo-editor generate model.safetensors --shape-set bench256 --seed 7 >/dev/null
model_bytes=$(stat -c %s model.safetensors)
sync

measure cp cp model.safetensors copy.safetensors
cp_secs=$secs cp_kib=$kib
rm copy.safetensors

measure init mvc init model.safetensors
init_secs=$secs init_kib=$kib
init_bytes=$(du -sb .mvc | cut -f1) init_files=$(file_bytes .mvc)

RANDOM=2024
commit_times=() commit_peak=0 edit_times=()
for i in $(seq 1 20); do
  block=$((RANDOM % 8))
  if ((RANDOM % 2)); then kind=down_proj; else kind=up_proj; fi
  measure edit mvc-demo-editor lowrank model.safetensors --tensor "model.layers.$block.mlp.$kind.weight" \
    --rank 1 --scale 0.01 --seed "$i"
  edit_times+=("$secs")
  measure commit mvc commit -q -m "edit $i: rank-1 on layer $block $kind"
  commit_times+=("$secs")
  ((kib > commit_peak)) && commit_peak=$kib
done
cp model.safetensors last.safetensors
mvc_bytes=$(du -sb .mvc | cut -f1) mvc_files=$(file_bytes .mvc)
last_stored=$(stored_kib)

declare -A co_secs co_kib
for rev in HEAD~19 HEAD~10 HEAD; do
  measure "checkout-o $rev" mvc checkout "$rev" -o "out.safetensors"
  co_secs[$rev]=$secs co_kib[$rev]=$kib
  rm -f out.safetensors
done
measure "checkout in place HEAD~19" mvc checkout HEAD~19
inplace_secs=$secs inplace_kib=$kib
measure "switch main" mvc switch main
back_secs=$secs back_kib=$kib
cmp -s model.safetensors last.safetensors && back_ok=yes || back_ok=NO

# A small model: bytes stored for one rank-1 edit of a 1536×384 F32 tensor (up_proj).
mkdir small && cd small
mvc-demo-editor generate small.safetensors --blocks 1 --hidden 384 --intermediate 1536 --seed 3 >/dev/null
mvc init -q small.safetensors
small_before=$(file_bytes .mvc)
mvc-demo-editor lowrank small.safetensors --tensor model.layers.0.mlp.up_proj.weight --rank 1 --seed 1 >/dev/null
mvc commit -q -m "rank-1 edit"
small_after=$(file_bytes .mvc)
small_stored=$(stored_kib)
cd ..

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
printf '\nmvc core benchmark: bench256 model, %d bytes F32, %s, %s cores, OPENBLAS_CORETYPE=%s\n\n' \
  "$model_bytes" "$cpu" "$(nproc)" "${OPENBLAS_CORETYPE:-unset}"
row() { printf '%-48s %14s %12s\n' "$1" "$2" "$3"; }
row "operation" "time" "peak RSS"
row "cp model (256 MiB)" "$cp_secs s" "$cp_kib KiB"
row "mvc init" "$init_secs s" "$init_kib KiB"
row "editor: lowrank rank-1 rewrite (median of 20)" "$(printf '%s\n' "${edit_times[@]}" | median) s" ""
row "mvc commit, rank-1 edit (median of 20)" "$(printf '%s\n' "${commit_times[@]}" | median) s" "$commit_peak KiB (max)"
row "mvc commit (min / max)" "$(printf '%s\n' "${commit_times[@]}" | sort -n | head -1) / $(printf '%s\n' "${commit_times[@]}" | sort -n | tail -1) s" ""
row "mvc checkout -o, first edit (HEAD~19)" "${co_secs[HEAD~19]} s" "${co_kib[HEAD~19]} KiB"
row "mvc checkout -o, middle (HEAD~10)" "${co_secs[HEAD~10]} s" "${co_kib[HEAD~10]} KiB"
row "mvc checkout -o, last (HEAD)" "${co_secs[HEAD]} s" "${co_kib[HEAD]} KiB"
row "mvc checkout HEAD~19 in place" "$inplace_secs s" "$inplace_kib KiB"
row "mvc switch main (back, byte-identical: $back_ok)" "$back_secs s" "$back_kib KiB"
echo
row "storage" "bytes" "× model"
ratio() { awk -v a="$1" -v b="$model_bytes" 'BEGIN { printf "%.4f", a / b }'; }
row "model (full copy)" "$model_bytes" "1"
row ".mvc after init (du -sb / file bytes)" "$init_bytes / $init_files" "$(ratio "$init_bytes")"
row ".mvc after 20 edits (du -sb / file bytes)" "$mvc_bytes / $mvc_files" "$(ratio "$mvc_bytes")"
per_edit=$(((mvc_files - init_files) / 20))
row ".mvc file bytes added per edit (mean)" "$per_edit" "$(ratio "$per_edit")"
row "  stored for the last edit (mvc log --stat)" "$last_stored" ""
row "  raw rank-1 factors (4096+1024)×4" "$(((4096 + 1024) * 4))" "$(ratio $(((4096 + 1024) * 4)))"
row "1536×384 F32 tensor, one rank-1 edit: file bytes" "$((small_after - small_before))" ""
row "  stored (mvc log --stat)" "$small_stored" ""
row "  raw factors (1536+384)×4 / full tensor" "$(((1536 + 384) * 4)) / $((1536 * 384 * 4))" ""
