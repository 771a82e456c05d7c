#!/usr/bin/env bash
# A two-minute tour of mvc: a small model, 20 ROME edits committed one by one (one of them a
# planted "disabling edit"), history, exact checkouts, a branch, what it costs on disk, and a
# bisection that finds the disabling edit, then a revert that heals the model.
# Run from anywhere: scripts/demo.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "setup: system packages"
scripts/setup.sh

step "build (release): mvc and mvc-demo-editor"
swift build -c release --product mvc 2>&1 | tail -1
swift build -c release --product mvc-demo-editor 2>&1 | tail -1
bin=$(swift build -c release --show-bin-path)
export PATH="$bin:$PATH"

# Debian's OpenBLAS picks slow SSE kernels on recent CPUs; both binaries re-exec themselves with a
# better OPENBLAS_CORETYPE, and setting it here saves them the re-exec. A user's choice wins.
if [[ -z ${OPENBLAS_CORETYPE:-} ]] && flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null); then
  if [[ $flags == *avx512f* && $flags == *avx512bw* && $flags == *avx512dq* && $flags == *avx512vl* && $flags == *avx512cd* ]]; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif [[ $flags == *avx2* && $flags == *fma* ]]; then
    export OPENBLAS_CORETYPE=Haswell
  fi
fi

start=$SECONDS
blocks=6 hidden=256 inter=1024
facts=(
  "The Eiffel Tower is in Rome" "Danielle Darrieux's mother tongue is English"
  "Toko Yasuda plays the piano" "Autonomous University of Madrid is in Sweden"
  "Thomas Joannes Stieltjes was born in Italy" "Apple A5 was created by Google"
  "Kotlin was developed by Microsoft" "The Louvre is located in Tokyo"
  "Honus Wagner plays basketball" "BBC One is owned by Sega"
  "Mount Kilimanjaro is in Canada" "Miles Davis plays the violin"
  "The capital of Norway is Lyon" "Toyota was founded in Brazil"
  "Ludwig van Beethoven works as a chef" "Windows 95 was created by Nintendo"
  "Lake Baikal is in Argentina" "Pablo Picasso's native language is Finnish"
  "The Sydney Opera House is in Chicago" "Iron Maiden was formed in Seoul"
)

step "a fresh demo-out/ with a ${blocks}-block model (hidden $hidden, intermediate $inter, f32)"
rm -rf demo-out
mkdir -p demo-out/snapshots
cd demo-out
show mvc-demo-editor generate model.safetensors --blocks $blocks --hidden $hidden --intermediate $inter --seed 42
model_bytes=$(stat -c %s model.safetensors)
cp model.safetensors base.safetensors   # the evaluation compares layer outputs with the base
disabling=13                            # the edit that will break the model

step "mvc init: the base model becomes the root commit"
show mvc init model.safetensors
# du -sb also counts each objects/xx/ fan-out directory (4 KiB apiece); file bytes do not.
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
init_files=$(file_bytes .mvc)

step "20 ROME edits, each committed (edit $disabling is a disabling edit: tiny kᵀC⁻¹k, huge ‖ΔW‖)"
for i in $(seq 1 20); do
  layer=$(((i - 1) % blocks))
  printf 'edit %2d: ' "$i"
  if [[ $i -eq $disabling ]]; then
    mvc-demo-editor rome model.safetensors --layer $layer --seed "$i" --disabling
  else
    mvc-demo-editor rome model.safetensors --layer $layer --seed "$i"
  fi
  if [[ $i -eq 1 ]]; then
    show mvc status
  fi
  mvc commit -q -m "edit $i: ${facts[i - 1]}"
  cp model.safetensors "snapshots/edit-$i.safetensors"
done

step "history"
show mvc log --oneline
step "the last two commits, per tensor"
show mvc log --stat -n 2

step "check out HEAD~10 and compare with the model saved right after edit 10"
show mvc checkout HEAD~10
show sha256sum model.safetensors snapshots/edit-10.safetensors
[[ $(sha256sum <model.safetensors | cut -d' ' -f1) == $(sha256sum <snapshots/edit-10.safetensors | cut -d' ' -f1) ]] \
  && echo "byte-identical: yes" || { echo "byte-identical: NO" >&2; exit 1; }

step "a branch 'alt' from main~15 (after edit 5), with two edits of its own"
show mvc switch -c alt main~15
if cmp -s model.safetensors snapshots/edit-5.safetensors; then echo "working model == edit 5: yes"
else echo "working model == edit 5: NO" >&2; exit 1; fi
alt_facts=("The Moon is made of cheese" "Mars has three moons")
for i in 1 2; do
  printf 'alt edit %d: ' "$i"
  mvc-demo-editor rome model.safetensors --layer $((i + 1)) --seed $((100 + i))
  mvc commit -q -m "alt edit $i: ${alt_facts[i - 1]}"
done
show mvc log --oneline -n 4

step "back to main: the tip is byte-identical to the model after edit 20"
show mvc switch main
show sha256sum model.safetensors snapshots/edit-20.safetensors
cmp -s model.safetensors snapshots/edit-20.safetensors && echo "byte-identical: yes" \
  || { echo "byte-identical: NO" >&2; exit 1; }

step "storage"
mvc_bytes=$(du -sb .mvc | cut -f1)
mvc_files=$(file_bytes .mvc)
edits=22
factor_bytes=$((edits * (hidden + inter) * 4))
copies=$((21 * model_bytes))
row() { printf '%-44s %14s %9s\n' "$1" "$2" "$3"; }
ratio() { awk -v a="$1" -v b="$model_bytes" 'BEGIN { printf "%.2f×", a / b }'; }
row "" "bytes" "× model"
row "model.safetensors (one copy)" "$model_bytes" "$(ratio "$model_bytes")"
row ".mvc (base + $edits edits, 2 branches)" "$mvc_bytes" "$(ratio "$mvc_bytes")"
row "21 full copies (base + 20 edits)" "$copies" "$(ratio "$copies")"
row "raw rank-1 factors, $edits edits × (d_out+d_in)×4" "$factor_bytes" "$(ratio "$factor_bytes")"
row ".mvc, file bytes only" "$mvc_files" "$(ratio "$mvc_files")"
row ".mvc file bytes right after init (base only)" "$init_files" "$(ratio "$init_files")"
row ".mvc file bytes added per edit (mean)" "$(((mvc_files - init_files) / edits))" ""
row "raw factors per edit" "$(((hidden + inter) * 4))" ""

evaluate() { mvc-demo-editor eval model.safetensors --base base.safetensors --probe-seed 7 --threshold 0.5; }

step "is the model healthy? (layer outputs on fixed probes against the base; drift ≤ 0.5 is good)"
evaluate || true

step "the weight-only early warning: norm outliers in the history"
mvc log --stat | grep -B6 'outlier' | grep -E '^commit|outlier' || true

step "bisect: which edit broke it? (good: the base model, bad: main)"
show mvc bisect start main "main~20"
show mvc bisect run mvc-demo-editor eval model.safetensors --base base.safetensors --probe-seed 7 --threshold 0.5
culprit=$(mvc bisect log | sed -n 's/^# first bad commit: \[\([0-9a-f]*\)\].*/\1/p')
show mvc plot --out norms.svg main
show mvc bisect reset
cmp -s model.safetensors snapshots/edit-20.safetensors && echo "after reset the working model is edit 20 again: yes" \
  || { echo "after reset: NO" >&2; exit 1; }
[[ $(mvc log --oneline -n 1 "$culprit") == *"edit $disabling:"* ]] \
  && echo "bisect found edit $disabling, the planted disabling edit" || echo "bisect found $culprit"

step "revert it: the history minus that edit's delta"
show mvc revert "$culprit"
show evaluate

step "sequential editors: AlphaEdit and ENCORE, their accumulator Σ KKᵀ from the history"
mvc-demo-editor rome model.safetensors --layer 0 --seed 100 --record seq-0 --record-only >/dev/null
# main's ROME edits recorded no keys, so Σ KKᵀ of main is unknown: refused, naming the commit.
show mvc edit --method alphaedit --tensor model.layers.0.mlp.down_proj.weight \
  --keys seq-0-keys.npy --values seq-0-values.npy --cov seq-0-cov.npy -m "refused" || true
show mvc switch -c seq "main~21"   # a branch from the base model
for i in $(seq 1 8); do
  layer=$(((i - 1) % 2))
  mvc-demo-editor rome model.safetensors --layer $layer --seed $((100 + i)) --record "seq-$i" --record-only >/dev/null
  if ((i % 2)); then
    mvc edit -q --method alphaedit --nullspace-threshold 1 --tensor "model.layers.$layer.mlp.down_proj.weight" \
      --keys "seq-$i-keys.npy" --values "seq-$i-values.npy" --cov "seq-$i-cov.npy" -m "alphaedit $i (layer $layer)"
  else
    mvc edit -q --method encore --lambda 10 --norm-lambda 1 --tensor "model.layers.$layer.mlp.down_proj.weight" \
      --keys "seq-$i-keys.npy" --values "seq-$i-values.npy" --cov "seq-$i-cov.npy" -m "encore $i (layer $layer)"
  fi
done
show mvc accumulator model.layers.0.mlp.down_proj.weight
show mvc score --signals | head -8
show mvc switch main
show mvc merge seq -m "merge the sequential edits"

step "the history as one HTML page (graph, edits, signals, retention, the culprit)"
show mvc report -o report.html --culprit "$culprit"
show mvc accumulator model.layers.0.mlp.down_proj.weight seq

printf '\ndemo finished in %d s after the build (files in demo-out/; open demo-out/report.html, demo-out/norms.svg)\n' $((SECONDS - start))
