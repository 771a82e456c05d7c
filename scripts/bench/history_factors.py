#!/usr/bin/env python3
"""Rank-1 factor files for `mvc commit-factors`, one per edit, for the `history` bench section.

    history_factors.py MODEL.safetensors OUTDIR TENSORS.txt [--scale 0.01] [--seed 1]

TENSORS.txt names the tensor of edit i on line i. Edit i is written to OUTDIR/i.safetensors as
'T.u' (rows×1) and 'T.v' (cols×1), Float32, with ‖u·vᵀ‖_F = scale × ‖W‖_F of the base tensor
(the demo editor's `lowrank --scale` convention), so the chain of commits is what a sequence of
rank-one editors' edits committed with commit-factors looks like. Needs numpy only.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def write_factors(path, name, u, v):
    u = np.ascontiguousarray(u, dtype="<f4")
    v = np.ascontiguousarray(v, dtype="<f4")
    header = {
        f"{name}.u": {"dtype": "F32", "shape": [u.size, 1], "data_offsets": [0, u.nbytes]},
        f"{name}.v": {"dtype": "F32", "shape": [v.size, 1], "data_offsets": [u.nbytes, u.nbytes + v.nbytes]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + u.tobytes() + v.tobytes())


def main():
    args = sys.argv[1:]
    scale, seed = 0.01, 1
    if "--scale" in args:
        i = args.index("--scale"); scale = float(args[i + 1]); del args[i:i + 2]
    if "--seed" in args:
        i = args.index("--seed"); seed = int(args[i + 1]); del args[i:i + 2]
    model, out, listing = args
    header, offset = read_header(model)
    names = Path(listing).read_text().split()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    norms = {}
    data = np.memmap(model, dtype=np.uint8, mode="r")
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names, start=1):
        info = header[name]
        if info["dtype"] != "F32":
            sys.exit(f"history_factors.py: {name} is {info['dtype']}, only F32 is generated")
        shape = info["shape"]
        rows, cols = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if len(shape) == 1:
            rows, cols = 1, shape[0]
        if name not in norms:
            a, b = info["data_offsets"]
            norms[name] = float(np.linalg.norm(data[offset + a:offset + b].view("<f4").astype(np.float64)))
        u = rng.standard_normal(rows)
        v = rng.standard_normal(cols)
        v *= scale * norms[name] / (np.linalg.norm(u) * np.linalg.norm(v))
        write_factors(out / f"{i}.safetensors", name, u, v)


if __name__ == "__main__":
    main()
