# shellcheck shell=bash
# ---- section: transfer (sourced by scripts/bench.sh) --------------------------------------------
# gc, push and clone of the bench256 repository (256 MiB F32, a few rank-1 edits) over file:// and
# git:// (a git daemon on loopback, started and stopped here), beside `cp -r .mvc`; peak RSS;
# `.mvc` bytes before/after gc; git fsck, mvc fsck, plain `git clone` and bytes-equal checkouts.
# MVC_BENCH_TRANSFER_MVC=/path/to/mvc measures another mvc binary (e.g. an older build).
tmvc=${MVC_BENCH_TRANSFER_MVC:-mvc}
tn=${MVC_BENCH_TRANSFER_EDITS:-5}
# tmeasure CMD...: like measure, plus user+system CPU seconds in $cpu (load does not inflate it).
tmeasure() {
  /usr/bin/time -f "%e %M %U %S" -o "$work/.t" "$@" >"$work/.out" 2>&1 || {
    tail -20 "$work/.out" >&2
    echo "bench.sh: '$*' failed" >&2
    exit 1
  }
  read -r secs kib usr sys <"$work/.t"
  cpu=$(calc "$usr + $sys")
}
echo
echo "== transfer: bench256 (8 × [4096×1024, 1024×4096] F32) + $tn rank-1 edits; $($tmvc --version)"
echo "   gc, push, clone over file:// and git:// (git daemon on 127.0.0.1), beside cp -r .mvc"
t=$work/transfer
rm -rf "$t" && mkdir -p "$t/w" "$t/srv"
cd "$t/w"
mvc-demo-editor generate model.safetensors --shape-set bench256 --seed 7 >/dev/null
"$tmvc" init -q model.safetensors
for i in $(seq 1 "$tn"); do
  mvc-demo-editor lowrank model.safetensors --tensor "${edit_tensor[i]}" --rank 1 --scale 0.01 --seed "${edit_seed[i]}" >/dev/null
  "$tmvc" commit -q -m "edit $i"
done
sha_model=$(sha256sum model.safetensors | cut -d' ' -f1)
sync
cp -r .mvc "$t/cp-warm" && rm -rf "$t/cp-warm" # page cache warm, as for every command below
tmeasure cp -r .mvc "$t/cp-copy"
cp_s=$secs cp_kib=$kib cp_cpu=$cpu
rm -rf "$t/cp-copy"
rows=()
row() { rows+=("$(printf '%-34s %8s %8s %8s %10s' "$1" "$secs" "$cpu" "$(mib "$kib")" "$(calc "$secs / $cp_s")")"); }

git init -q --bare "$t/loose.git"
"$tmvc" remote add loose "file://$t/loose.git"
tmeasure "$tmvc" push -q loose
row "push file:// (loose objects)"
push_loose_s=$secs push_loose_kib=$kib

bytes_before=$(file_bytes .mvc) du_before=$(du_bytes .mvc)
tmeasure "$tmvc" gc -q
row "mvc gc"
gc_s=$secs gc_kib=$kib
bytes_after=$(file_bytes .mvc) du_after=$(du_bytes .mvc)
git --git-dir=.mvc fsck --strict >"$t/fsck.out" 2>&1 && fsck_ok=1 || fsck_ok=0
"$tmvc" fsck >"$t/mvcfsck.out" 2>&1 && mvcfsck_ok=1 || mvcfsck_ok=0

git init -q --bare "$t/packed.git"
"$tmvc" remote add origin "file://$t/packed.git"
tmeasure "$tmvc" push -q origin
row "push file:// (after gc)"
push_file_s=$secs push_file_kib=$kib
tmeasure "$tmvc" clone -q "file://$t/packed.git" "$t/c-file"
row "clone file://"
clone_file_s=$secs clone_file_kib=$kib
[[ $(sha256sum "$t/c-file/model.safetensors" | cut -d' ' -f1) == "$sha_model" ]] && eq_file=1 || eq_file=0

# git:// on loopback
git init -q --bare "$t/srv/models.git"
port=""
for _ in 1 2 3 4 5; do
  # Not $RANDOM: bench.sh seeds it, and two runs at once would pick the same port.
  try=$(shuf -i 20000-50000 -n 1)
  git daemon --export-all --enable=receive-pack --base-path="$t/srv" --listen=127.0.0.1 --port="$try" \
    --reuseaddr --pid-file="$t/daemon.pid" "$t/srv" >"$t/daemon.log" 2>&1 &
  daemon_job=$!
  for _ in $(seq 1 50); do
    kill -0 "$daemon_job" 2>/dev/null || break # the port was taken: this daemon exited
    git ls-remote "git://127.0.0.1:$try/models.git" >/dev/null 2>&1 && kill -0 "$daemon_job" 2>/dev/null &&
      { port=$try; break; }
    sleep 0.1
  done
  [[ -n $port ]] && break
  kill "$daemon_job" 2>/dev/null || true
  wait "$daemon_job" 2>/dev/null || true
done
if [[ -n $port ]]; then
  "$tmvc" remote add daemon "git://127.0.0.1:$port/models.git"
  tmeasure "$tmvc" push -q daemon
  row "push git:// (after gc)"
  push_git_s=$secs push_git_kib=$kib
  tmeasure "$tmvc" clone -q "git://127.0.0.1:$port/models.git" "$t/c-git"
  row "clone git://"
  clone_git_s=$secs clone_git_kib=$kib
  [[ $(sha256sum "$t/c-git/model.safetensors" | cut -d' ' -f1) == "$sha_model" ]] && eq_git=1 || eq_git=0
  kill "$daemon_job" 2>/dev/null || true
  wait "$daemon_job" 2>/dev/null || true
else
  echo "git daemon did not start (see $t/daemon.log): git:// rows skipped"
  push_git_s=0 push_git_kib=0 clone_git_s=0 clone_git_kib=0 eq_git=1
fi
git clone -q --bare "$t/w/.mvc" "$t/plain.git" && git --git-dir="$t/plain.git" fsck >/dev/null 2>&1 && plain_ok=1 || plain_ok=0

printf '%-34s %8s %8s %8s %10s\n' "operation" "wall s" "cpu s" "peak MiB" "× cp wall"
printf '%-34s %8s %8s %8s %10s\n' "cp -r .mvc" "$cp_s" "$cp_cpu" "$(mib "$cp_kib")" 1
printf '%s\n' "${rows[@]}"
echo ".mvc: $bytes_before B in files ($du_before B on disk) before gc, $bytes_after B ($du_after B) after (snapshot cache included)"
limit_kib=$(((2 * 16 + 64) * 1024)) # largest tensor 4096×1024 F32 = 16 MiB
worst=$(printf '%s\n' "$gc_s" "$push_file_s" "$clone_file_s" "$push_git_s" "$clone_git_s" | maxof)
peak=$(printf '%s\n' "$gc_kib" "$push_loose_kib" "$push_file_kib" "$clone_file_kib" "$push_git_kib" "$clone_git_kib" | maxof)
echo "goal gc $gc_s s ≤ 2 × cp $cp_s s: $(pass "$gc_s <= 2 * $cp_s")"
echo "goal push/clone file:// $push_file_s / $clone_file_s s ≤ 2 × cp: $(pass "$push_file_s <= 2 * $cp_s && $clone_file_s <= 2 * $cp_s")"
echo "goal push/clone git:// $push_git_s / $clone_git_s s ≤ 2 × cp: $(pass "$push_git_s <= 2 * $cp_s && $clone_git_s <= 2 * $cp_s")"
echo "goal peak RSS of gc, push, clone $(mib "$peak") MiB ≤ 2 × 16 MiB + 64 MiB = 96 MiB: $(pass "$peak <= $limit_kib")"
echo "git fsck after gc: $(pass "$fsck_ok == 1"); mvc fsck: $(pass "$mvcfsck_ok == 1"); plain git clone + fsck: $(pass "$plain_ok == 1")"
echo "clones bytes-equal to the working model: file:// $(pass "$eq_file == 1"), git:// $(pass "$eq_git == 1")"
echo "(worst transfer $worst s; timings on a shared 2-core machine, cpu s is user+system of mvc alone)"
cd "$work" && rm -rf "$t"
