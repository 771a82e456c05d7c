"""Generates a one-tensor model and applies a rank-one edit the way an editor does it in torch.

  bench_edits.py generate OUT --rows R --cols C --dtype bf16|fp16|fp32 [--seed S]
  bench_edits.py edit MODEL --rel 0.01 [--seed S] [--factors F.safetensors]

`generate` writes one tensor, `model.layers.0.mlp.down_proj.weight` (rows × cols, N(0, 0.02²)
rounded to the dtype). `edit` draws u (rows) and v (cols) in float32, scaled so that
‖u·vᵀ‖_F / ‖W‖_F = rel, computes `(W.float() + torch.outer(u, v)).to(dtype)` (one float32 add,
one rounding to the dtype: what ROME/MEMIT code does on a half-precision model), writes the model
to a temporary file renamed over MODEL, and prints one line: `floor=<fraction>`, the fraction of
elements where the editor's result differs from the canonical rule (Float64 sum, one rounding)
applied to the very same factors: the residual no recovered factors can avoid. With --factors it
also saves u and v as `<tensor>.u` / `<tensor>.v` for `mvc commit-factors`.
"""
import argparse
import os

import torch
from safetensors.torch import load_file, save_file

NAME = "model.layers.0.mlp.down_proj.weight"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["generate", "edit"])
    p.add_argument("path")
    p.add_argument("--rows", type=int)
    p.add_argument("--cols", type=int)
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--rel", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--factors")
    a = p.parse_args()
    g = torch.Generator().manual_seed(a.seed)
    if a.command == "generate":
        w = (torch.randn(a.rows, a.cols, generator=g) * 0.02).to(DTYPES[a.dtype])
        save_file({NAME: w}, a.path)
        return
    w = load_file(a.path)[NAME]
    rows, cols = w.shape
    u = torch.randn(rows, generator=g)
    v = torch.randn(cols, generator=g)
    scale = a.rel * w.double().norm() / (u.double().norm() * v.double().norm())
    s = float(scale.sqrt())
    u, v = (u * s).float(), (v * s).float()
    new = (w.float() + torch.outer(u, v)).to(w.dtype)
    exact = (w.double() + torch.outer(u.double(), v.double()))
    # One rounding from Float64: to float32 first would round twice (bf16/fp16), so round by hand
    # through the neighbouring representable values of the dtype.
    canonical = round_once(exact, w.dtype)
    floor = (canonical != new).double().mean().item()
    tmp = a.path + ".tmp"
    save_file({NAME: new.contiguous()}, tmp)
    os.replace(tmp, a.path)
    if a.factors:
        save_file({NAME + ".u": u.reshape(rows, 1), NAME + ".v": v.reshape(cols, 1)}, a.factors)
    print(f"floor={floor:.6g}")


def round_once(x, dtype):
    """Float64 → dtype with a single round-to-nearest-even (torch rounds f64 → bf16 via f32)."""
    if dtype == torch.float32:
        return x.to(torch.float32)
    lo = x.to(dtype)  # a candidate within one ulp
    bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16}[dtype]
    b = lo.view(bits).to(torch.int32)
    # neighbours one ordered step down and up
    ordered = torch.where(b < 0, b ^ 0x7FFF, b)
    cands = []
    for step in (-1, 0, 1):
        o = ordered + step
        nb = torch.where(o < 0, o ^ 0x7FFF, o).to(torch.int16).view(dtype)
        cands.append(nb)
    best = cands[1]
    err = (best.double() - x).abs()
    for c in (cands[0], cands[2]):
        e = (c.double() - x).abs()
        even = (c.view(bits) & 1) == 0
        better = (e < err) | ((e == err) & even)
        best = torch.where(better, c, best)
        err = torch.where(better, e, err)
    return best


if __name__ == "__main__":
    main()
