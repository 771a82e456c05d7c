"""Base-store benchmark helper (scripts/bench-sections/base-store.sh).

  base_store.py prepare SRC OUTDIR   writes OUTDIR/fp32/model.safetensors (SRC's bytes) and
                                     OUTDIR/bf16/model.safetensors (every F32 tensor rounded to
                                     BF16, nearest even); prints '<kind> <tensor bytes>' per copy
  base_store.py zipnn FILE           ZipNN (byte grouping + Huffman) on each tensor's bytes of FILE:
                                     prints 'zipnn <raw> <compressed> <ratio> <round-trip ok|FAILED>'

Reads safetensors headers by hand (numpy only; zipnn only for 'zipnn').
"""
import json, os, struct, sys
import numpy as np


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    return meta, tensors


def write(path, meta, tensors):
    header, offset, blobs = {}, 0, []
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def bf16(raw):
    u = np.frombuffer(raw, np.uint32)
    rounded = ((u.astype(np.uint64) + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded.tobytes()


def main():
    if sys.argv[1] == "prepare":
        meta, tensors = read(sys.argv[2])
        out = sys.argv[3]
        write(f"{out}/fp32/model.safetensors", meta, tensors)
        half = {k: (("BF16", s, bf16(r)) if d == "F32" else (d, s, r)) for k, (d, s, r) in tensors.items()}
        write(f"{out}/bf16/model.safetensors", meta, half)
        print("fp32", sum(len(r) for _, _, r in tensors.values()))
        print("bf16", sum(len(r) for _, _, r in half.values()))
    elif sys.argv[1] == "zipnn":
        import warnings
        warnings.filterwarnings("ignore")
        from zipnn import ZipNN
        _, tensors = read(sys.argv[2])
        raw_total = comp_total = 0
        ok = True
        for dtype, _, raw in tensors.values():
            kind = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(dtype)
            if kind is None:
                comp_total += len(raw)
                raw_total += len(raw)
                continue
            z = ZipNN(input_format="byte", bytearray_dtype=kind)
            c = z.compress(raw)
            ok = ok and bytes(z.decompress(c)) == raw
            comp_total += len(c)
            raw_total += len(raw)
        print(f"zipnn {raw_total} {comp_total} {comp_total / raw_total:.4f} {'ok' if ok else 'FAILED'}")


main()
