# Sourced by scripts/bench.sh (section "edits"): the stored size of one rank-one edit committed as
# a full working model (`mvc commit`), on the Llama down-projection geometries, per dtype and
# relative norm. Needs the Python venv (scripts/python_env.sh: torch, safetensors).
#
# Each case: a one-tensor model (N(0, 0.02²) rounded to the dtype), `mvc init`, then an editor's
# rank-one edit in torch (u, v float32, `(W.float() + outer(u, v)).to(dtype)`; scripts/bench_edits.py),
# `mvc commit`, and `mvc checkout -o` of the new commit compared byte for byte with the edited file.
# Reported: the state's stored bytes (factors + residual, `stored_byte_count` of `mvc show --json`),
# the raw Float32 factor bytes 4·(rows + cols), their ratio, bits per element, the residual's
# nonzero elements, and the floor: the fraction of elements where the editor's result differs from
# the canonical rule on the editor's own factors.
# EDITS_CASES overrides the list ("rows×cols:dtype:rel[:compact] ..."; "compact" commits with
# `mvc commit --compact`, the sweep lines after the least-squares start); EDITS_SEED the seed (default 1).
edits_section() {
  local py cases
  py=$(scripts/python_env.sh)/bin/python
  cases=${EDITS_CASES:-"4096x14336:bf16:0.01 4096x14336:bf16:0.01:compact 2048x8192:bf16:0.01 4096x14336:fp16:0.01 2048x8192:fp16:0.01 4096x14336:fp32:0.01 2048x8192:fp32:0.01 4096x14336:fp32:0.1 2048x8192:fp32:0.1"}
  echo
  echo "== rank-one edits committed as a full model (mvc commit): stored bytes vs the Float32 factors"
  printf '%-12s %-5s %5s %-7s | %4s %10s %9s %7s %9s %10s %10s | %14s %6s\n' geometry dtype rel mode rank "stored B" "factor B" ratio bit/elt "residual" "floor" "commit s (CPU)" "exact"
  local c geometry dtype rel mode rows cols dir show stored rank nz floor elements flags
  for c in $cases; do
    IFS=: read -r geometry dtype rel mode <<<"$c"
    mode=${mode:-default}
    flags=()
    [[ $mode == compact ]] && flags=(--compact)
    rows=${geometry%x*} cols=${geometry#*x}
    dir=$work/edits-$geometry-$dtype-$rel-$mode
    mkdir -p "$dir" && cd "$dir"
    "$py" "$repo/scripts/bench_edits.py" generate model.safetensors --rows "$rows" --cols "$cols" --dtype "$dtype" --seed "${EDITS_SEED:-1}"
    mvc init -q model.safetensors
    floor=$("$py" "$repo/scripts/bench_edits.py" edit model.safetensors --rel "$rel" --seed "$((${EDITS_SEED:-1} + 1))" | sed 's/floor=//')
    # Wall and CPU (user + system) seconds: the machine may be shared, and CPU time is what load does not skew.
    /usr/bin/time -f "%e %U %S" -o "$dir/.time" mvc commit -q -m "rank-one edit" "${flags[@]}"
    read -r secs usr sys <"$dir/.time"
    show=$(mvc show --json HEAD)
    read -r stored rank nz <<<"$(printf '%s' "$show" | "$py" -c '
import json, sys
c = json.load(sys.stdin)["commit"]["changes"][0]
print(c["stored_byte_count"], c["rank"], c["residual_nonzero_count"] or 0)')"
    mvc checkout -q HEAD -o "$dir/out.safetensors"
    local exact=no
    cmp -s model.safetensors "$dir/out.safetensors" && exact=yes
    elements=$((rows * cols))
    printf '%-12s %-5s %5s %-7s | %4s %10s %9s %7s %9s %10s %10s | %14s %6s\n' "$geometry" "$dtype" "$rel" "$mode" "$rank" "$stored" \
      "$((4 * (rows + cols)))" "$(calc "$stored / (4 * ($rows + $cols))")" "$(calc "8 * $stored / $elements")" \
      "$nz ($(calc "$nz / $elements"))" "$floor" "$secs ($(calc "$usr + $sys"))" "$exact"
    cd "$work" && rm -rf "$dir"
  done
  echo "(goals, issue 14: bf16 4096x14336 ≤ 4 × factor bytes; fp32 at rel 0.01 ≤ 0.15 bit/element)"
}
