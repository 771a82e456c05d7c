# Section emmet-batch (sourced by scripts/bench.sh): one EMMET batch of EMMET_N edits (default
# 10,000, the papers' headline) on a 1600×6400 F32 layer with `mvc edit --method emmet`: the
# commit's stored bytes for the tensor (recorded keys, targets and covariance apart), against the
# dense matrix and the n·(rows + cols) Float32 factors, and the error against a float64 numpy
# reference (scripts/bench/emmet_batch.py). Wall and CPU time under /usr/bin/time.
emmet_batch_section() {
  cd "$repo"
  local n=${EMMET_N:-10000} d=$work/emmet venv
  venv=$(scripts/python_env.sh)
  mkdir -p "$d"
  echo "== EMMET batch: n = $n edits on a 1600×6400 F32 layer (mvc edit --method emmet)"
  "$venv/bin/python" scripts/bench/emmet_batch.py make "$d" "$n"
  (cd "$d" && mvc init -q model.safetensors)
  local before
  before=$(du -sb "$d/.mvc" | cut -f1)
  (cd "$d" && /usr/bin/time -f "%e %U %S %M" -o "$work/.emmet" mvc edit -q --method emmet \
    --tensor transformer.h.0.mlp.c_proj.weight --keys keys.npy --values values.npy --cov-keys k0.npy -m "batch of $n")
  read -r wall user sys kib <"$work/.emmet"
  (cd "$d" && mvc show --json HEAD) >"$d/show.json"
  "$venv/bin/python" - "$d/show.json" "$n" <<'PY'
import json, sys
def changes(o):
    if isinstance(o, dict):
        if isinstance(o.get("changes"), list):
            return o["changes"]
        o = list(o.values())
    for v in o if isinstance(o, list) else []:
        found = changes(v)
        if found:
            return found
show = json.load(open(sys.argv[1])); n = int(sys.argv[2])
change = changes(show)[0]
dense, factors = 1600 * 6400 * 4, n * (1600 + 6400) * 4
print(f"stored {change['storage']} rank {change.get('rank')}: {change['stored_byte_count']} bytes "
      f"= {change['stored_byte_count'] / dense:.3f} x dense ({dense}); factors at rank n would be {factors} ({factors / dense:.1f} x dense)")
PY
  echo "mvc edit: ${wall} s wall, $(echo "$user + $sys" | bc -l) s CPU, peak RSS $((kib / 1024)) MiB; .mvc grew $(($(du -sb "$d/.mvc" | cut -f1) - before)) bytes (keys, targets, covariance included)"
  cp "$d/model.safetensors" "$d/after.safetensors"
  "$venv/bin/python" scripts/bench/emmet_batch.py check "$d" "$n"
}
emmet_batch_section
