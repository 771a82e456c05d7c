"""Writes a rank-one update of one 2-D tensor as (1) a PEFT LoRA file for 'mvc commit --delta'
(`<prefix>.lora_A.weight` r×in, `.lora_B.weight` out×r, F32) and (2) a factor file for
'mvc commit-factors' (`<tensor>.u` rows×r, `<tensor>.v` cols×r, F32). numpy only.

    python3 llama_factors.py TENSOR ROWS COLS SEED LORA_OUT FACTORS_OUT
"""
import json
import struct
import sys

import numpy as np


def save(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)


tensor, rows, cols, seed, lora_out, factors_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rng = np.random.default_rng(seed)
u = (rng.standard_normal((rows, 1)) * 1e-3).astype(np.float32)
v = rng.standard_normal((cols, 1)).astype(np.float32)
prefix = "base_model.model." + tensor.removesuffix(".weight")
save(lora_out, {prefix + ".lora_A.weight": v.T, prefix + ".lora_B.weight": u})
save(factors_out, {tensor + ".u": u, tensor + ".v": v})
