#!/usr/bin/env python3
"""Sequential editing with mvc: N edits of one generated layer by AlphaEdit, ENCORE or MEMIT
(`mvc edit`), the retention of every earlier edit after each one (computed here from the working
model, as `mvc score` defines it), then `mvc score --signals --json` for the collapse signals.
Prints when the signals rise and when retention falls.

Keys are "real-text-like": a non-zero mean plus a power-law spectrum (eigenvalue j of C₀ ∝ j^-1.1,
about 70% of them below AlphaEdit's 2e-2 threshold, as the authors report for Llama3-8B), in a
random basis; subjects recur with Zipf frequencies (s^-1.1 over 400 subjects), each recurrence a
new target for a nearby key, so later edits contend with earlier ones as in CounterFact streams.
AlphaEdit runs with --l2 0.1: a first edit reaches ‖Pk‖²/(‖Pk‖² + L2) of its target, and ‖Pk‖²
grows with d_in (the authors' L2 = 10 is for d_in = 14336); MEMIT and ENCORE use λ = 10 (this
C₀ is E[kkᵀ] itself), ENCORE α = 1.

usage: bench_sequential.py MVC_BINARY WORKDIR METHOD N [--d-in 512] [--d-out 128]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("mvc")
p.add_argument("work")
p.add_argument("method", choices=["alphaedit", "encore", "memit"])
p.add_argument("n", type=int)
p.add_argument("--d-in", type=int, default=512)
p.add_argument("--d-out", type=int, default=128)
p.add_argument("--seed", type=int, default=7)
p.add_argument("--analyze", action="store_true",
               help="only analyze WORKDIR as a stopped run left it (progress.jsonl and the repository)")
a = p.parse_args()

rng = np.random.default_rng(a.seed)
d_in, d_out = a.d_in, a.d_out
tensor = "model.layers.0.mlp.down_proj.weight"
os.makedirs(a.work, exist_ok=True)
os.chdir(a.work)
# mvc re-executes itself once to pick OpenBLAS's kernel when this is unset; set it as demo.sh does.
if "OPENBLAS_CORETYPE" not in os.environ:
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    if all(f in flags.split() for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif "avx2" in flags.split() and "fma" in flags.split():
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_tensor(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        f.seek(8 + n + info["data_offsets"][0])
        count = int(np.prod(info["shape"]))
        return np.frombuffer(f.read(count * 4), dtype=np.float32).reshape(info["shape"]).astype(np.float64)


# The layer and the key distribution.
w0 = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
q, _ = np.linalg.qr(rng.standard_normal((d_in, d_in)))
spectrum = (np.arange(1, d_in + 1) ** -1.1)
spectrum *= 2e-2 / spectrum[int(0.3 * d_in)]  # ~70% of C₀'s eigenvalues below 2e-2
mean = q @ (np.sqrt(spectrum) * rng.standard_normal(d_in)) * 0.5
c0 = np.outer(mean, mean) + (q * spectrum) @ q.T
c0 = (c0 + c0.T) / 2
np.save("c0.npy", c0)
write_safetensors("model.safetensors", {tensor: w0, "model.layers.1.mlp.down_proj.weight": w0[:, ::-1].copy()})
subjects = 400
subject_keys = mean + (rng.standard_normal((subjects, d_in)) * np.sqrt(spectrum)) @ q.T
zipf = np.arange(1, subjects + 1) ** -1.1
zipf /= zipf.sum()


def run(*args, check=True):
    r = subprocess.run([a.mvc, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"mvc {' '.join(args)} failed: {r.stderr}")
    return r


if not a.analyze:
    run("init", "model.safetensors")
params = {"alphaedit": ["--l2", "0.1"], "encore": ["--lambda", "10", "--norm-lambda", "1"], "memit": ["--lambda", "10"]}[a.method]
keys, values, befores, subject_of = [], [], [], []
rows = []
started = time.time()
progress = open("progress.jsonl", "a")
for t in range(1, 0 if a.analyze else a.n + 1):
    s = rng.choice(subjects, p=zipf)
    k = subject_keys[s] + 0.1 * (rng.standard_normal(d_in) * np.sqrt(spectrum)) @ q.T
    w = read_tensor("model.safetensors", tensor)
    wk = w @ k
    direction = rng.standard_normal(d_out)
    v = wk + 0.5 * np.linalg.norm(wk) * direction / np.linalg.norm(direction)
    np.save("k.npy", k[None, :])
    np.save("v.npy", v[None, :])
    run("edit", "-q", "--method", a.method, "--tensor", tensor, "--keys", "k.npy", "--values", "v.npy", "--cov",
        "c0.npy", "-m", f"{a.method} {t} subject {s}", *params)
    keys.append(k)
    values.append(v)
    befores.append(wk)
    subject_of.append(s)
    w = read_tensor("model.safetensors", tensor)
    K, V, B = np.array(keys), np.array(values), np.array(befores)
    miss = np.linalg.norm(K @ w.T - V, axis=1)
    asked = np.linalg.norm(V - B, axis=1)
    retention = 1 - miss / asked
    # The facts currently asked: the latest edit of each subject (an earlier target of a subject
    # edited again is meant to be replaced, not retained).
    latest = sorted({sub: i for i, sub in enumerate(subject_of)}.values())
    current = float(np.median(retention[latest]))
    rows.append((t, float(retention.mean()), float(retention[: min(t, 100)].mean()), float(retention[-1]), current))
    progress.write(json.dumps({"t": t, "mean": rows[-1][1], "first100": rows[-1][2], "last": rows[-1][3],
                               "current_median": current, "seconds": time.time() - started}) + "\n")
    progress.flush()
    if t % 100 == 0:
        print(f"{a.method} {t}: median retention of current facts {rows[-1][4]:.3f}, mean of all {rows[-1][1]:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)
if a.analyze:
    rows = [(r["t"], r["mean"], r["first100"], r["last"], r["current_median"])
            for r in map(json.loads, open("progress.jsonl"))]
    elapsed = json.loads(open("progress.jsonl").readlines()[-1])["seconds"]
else:
    elapsed = time.time() - started
n = len(rows)

signals_started = time.time()
doc = json.loads(run("score", "--signals", "--json").stdout)
signals_seconds = time.time() - signals_started
points = [p for p in doc["signals"]["points"] if p["tensor"] == tensor]
flag = next((p["edit_count"] for p in points if p["flagged"]), None)
growth = [p["norm_growth"] for p in points]
energy = [p["top_energy"] for p in points]
drift = [p["drift_ratio"] for p in points]


def first(predicate, series):
    return next((i + 1 for i, x in enumerate(series) if x is not None and predicate(x)), None)


# Retention "falls" when the median retention of the facts currently asked drops below 0.8× its
# value at edit 50 (and, separately, below 0.5).
early = rows[min(49, len(rows) - 1)][4]
falls = first(lambda x: x < 0.5, [r[4] for r in rows])
falls_rel = first(lambda x: x < 0.8 * early, [r[4] for r in rows])
growth_rise = first(lambda x: x > 1.05, growth)
result = {
    "method": a.method, "edits": n, "d_in": d_in, "d_out": d_out, "seconds_per_edit": elapsed / n,
    "score_signals_seconds": signals_seconds,
    "current_facts_median_retention_at": {str(t): rows[t - 1][4] for t in (10, 50, 100, 200, 300, 400, 500, 600, 800, 1000)
                                          if t <= len(rows)},
    "mean_retention_all_edits_at": {str(t): rows[t - 1][1] for t in (50, 100, 300, 600, 1000) if t <= len(rows)},
    "first_100_retention_at_end": rows[-1][2],
    "current_retention_below_0.5_at": falls, "current_retention_below_0.8x_edit50_at": falls_rel,
    "drift_flag_at": flag, "norm_growth_above_1.05_at": growth_rise,
    "norm_growth_at_end": growth[-1], "top_energy_at_end": energy[-1],
    "max_drift_ratio": max((x for x in drift if x is not None), default=None),
    "lead_drift_flag_vs_retention_0.8x": (falls_rel - flag) if falls_rel and flag else None,
    "lead_norm_growth_vs_retention_0.8x": (falls_rel - growth_rise) if falls_rel and growth_rise else None,
}
with open("result.json", "w") as f:
    json.dump({"result": result, "retention": rows, "signals": points}, f)
print(json.dumps(result, indent=1))
