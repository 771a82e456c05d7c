"""EMMET batch benchmark helper (scripts/bench-sections/emmet-batch.sh).

  emmet_batch.py make DIR N     a 1600×6400 F32 layer (nn.Linear: d_out 1600, d_in 6400) in
                                DIR/model.safetensors, N keys / targets and 8000 preserved keys
  emmet_batch.py check DIR N    the float64 reference ΔW = R (KᵀC⁻¹K + μI)⁻¹ KᵀC⁻¹ (λ = 1, μ = 0.1),
                                against DIR/after.safetensors: prints the max distance to
                                round(W₀ + ΔW_ref) in ulps of max|W| and the relative error of
                                W_after − W₀ with the Float32 rounding floor beside it
"""
import json, struct, sys
import numpy as np

D_OUT, D_IN, M = 1600, 6400, 8000
NAME = "transformer.h.0.mlp.c_proj.weight"


def write_model(path, w):
    header = json.dumps({NAME: {"dtype": "F32", "shape": list(w.shape), "data_offsets": [0, w.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + w.astype("<f4").tobytes())


def read_model(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))[NAME]
        f.seek(8 + n + h["data_offsets"][0])
        return np.frombuffer(f.read(h["data_offsets"][1] - h["data_offsets"][0]), "<f4").reshape(h["shape"])


def inputs(n):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((D_OUT, D_IN)) * 0.02).astype(np.float32)
    k0 = rng.standard_normal((M, D_IN)).astype(np.float32)
    keys = rng.standard_normal((n, D_IN)).astype(np.float32)
    values = (keys.astype(np.float64) @ w.T.astype(np.float64) + rng.standard_normal((n, D_OUT)) * 0.05).astype(np.float32)
    return w, k0, keys, values


def main():
    cmd, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w, k0, keys, values = inputs(n)
    if cmd == "make":
        write_model(f"{d}/model.safetensors", w)
        np.save(f"{d}/k0.npy", k0)
        np.save(f"{d}/keys.npy", keys)
        np.save(f"{d}/values.npy", values)
        return
    w0 = w.astype(np.float64)
    k = keys.astype(np.float64).T  # d_in × n
    c = k0.astype(np.float64).T @ k0.astype(np.float64) / M
    r = values.astype(np.float64).T - w0 @ k  # d_out × n
    cinv_k = np.linalg.solve(c, k)
    g = k.T @ cinv_k + (0.1 * np.eye(n) if n > 1 else 0)
    dw = r @ np.linalg.solve(g, cinv_k.T)
    after = read_model(f"{d}/after.safetensors").astype(np.float64)
    expected = (w0 + dw).astype(np.float32).astype(np.float64)
    ulp = np.spacing(np.float32(np.abs(expected).max()))
    floor = np.linalg.norm(expected - w0 - dw) / np.linalg.norm(dw)
    print(f"max |W_stored - round(W0 + dW_ref)| = {np.abs(after - expected).max() / ulp:.3f} ulp of max|W|; "
          f"elements differing: {np.count_nonzero(after != expected)} of {after.size}; "
          f"||(W_stored - W0) - dW_ref|| / ||dW_ref|| = {np.linalg.norm(after - w0 - dw) / np.linalg.norm(dw):.3e} "
          f"(Float32 rounding floor of the weights {floor:.3e})")


main()
