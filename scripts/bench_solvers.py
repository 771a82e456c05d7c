#!/usr/bin/env python3
"""Numpy timings of the three closed-form edit updates (ROME, EMMET, MEMIT) at GPT-2 XL MLP shape.

Same formulas and orientation as Sources/Apply/EditSolvers.swift: W is d_out x d_in (math
orientation), keys and values are rows (n x d_in, n x d_out), C0 = K0^T K0 / m is the uncentred second
moment, C = lambda*C0, mu is added to the EMMET n x n system only when n > 1. Everything is Float64 and
uses Cholesky factorisations and solves (scipy.linalg.cho_factor / cho_solve, i.e. dpotrf / dpotrs),
as the Swift code does; without scipy it falls back to numpy.linalg.solve (LU, like the authors'
torch.linalg.solve), and says so in the header line.

Every (method, n) row runs in a fresh child process so that the reported peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss) belongs to that row alone; it includes W0 (Float32,
41 MB) and C0 (Float64, 328 MB), which every row loads.

Usage: scripts/bench_solvers.py [--sizes 1,100,1000,10000] [--methods rome,emmet,memit]
                                [--preservation-keys 8000] [--skip-emmet-above N]
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    from scipy.linalg import cho_factor, cho_solve

    def spd_solve(a, b):
        return cho_solve(cho_factor(a, lower=True, overwrite_a=True, check_finite=False), b,
                         check_finite=False)
    SOLVER = "scipy cho_factor/cho_solve (Cholesky)"
except ImportError:  # pragma: no cover
    def spd_solve(a, b):
        return np.linalg.solve(a, b)
    SOLVER = "numpy.linalg.solve (LU; scipy missing)"

D_OUT, D_IN = 1600, 6400


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_fixtures(directory, preservation_keys, seed=0):
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    w0 = (rng.standard_normal((D_OUT, D_IN), dtype=np.float32) * 0.02).astype(np.float32)
    k0 = rng.standard_normal((preservation_keys, D_IN))
    c0 = k0.T @ k0 / preservation_keys
    del k0
    np.save(os.path.join(directory, "w0.npy"), w0)
    np.save(os.path.join(directory, "c0.npy"), c0)
    return time.perf_counter() - t0


def run_row(directory, method, n, lam, mu, seed=1):
    w0 = np.load(os.path.join(directory, "w0.npy"))
    c0 = np.load(os.path.join(directory, "c0.npy"))
    rng = np.random.default_rng(seed + n)
    keys = rng.standard_normal((n, D_IN))          # rows, as files store them
    values = rng.standard_normal((n, D_OUT))
    timings = {}
    t0 = time.perf_counter()
    w0k = keys @ w0.T.astype(np.float64)          # n x d_out, Float64 accumulation
    resid = values - w0k                          # n x d_out, rows
    timings["residual"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if method == "rome":
        c = lam * c0
        x = spd_solve(c, keys[0])            # C^-1 k
        denom = keys[0] @ x
        u = resid[0] / denom                       # d_out
        v = x                                      # d_in
    elif method == "emmet":
        c = lam * c0
        x = spd_solve(c, keys.T)             # d_in x n = C^-1 K_E
        g = keys @ x                               # n x n
        if n > 1:
            g[np.diag_indices(n)] += mu
        u = spd_solve(g, resid).T            # (G^-1 R^T)^T = R G^-1 (G symmetric), d_out x n
        v = x
    elif method == "memit":
        a = lam * c0
        a += keys.T @ keys                         # lambda C0 + K_E K_E^T
        v = spd_solve(a, keys.T)             # d_in x n
        u = resid.T                                # d_out x n
    else:
        raise ValueError(method)
    timings["solve"] = time.perf_counter() - t1
    timings["total"] = timings["residual"] + timings["solve"]
    # Sanity figure: for ROME and EMMET with mu=0, (W0 + U V^T) k_i = v_i; report the relative residual
    # of the first edit without forming the dense update.
    k = keys[0]
    after = w0k[0] + u @ (v.T @ k) if u.ndim == 2 else w0k[0] + u * (v @ k)
    rel = np.linalg.norm(after - values[0]) / np.linalg.norm(values[0] - w0k[0])
    return timings, rel, peak_rss_mb()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000,10000")
    parser.add_argument("--methods", default="rome,emmet,memit")
    parser.add_argument("--preservation-keys", type=int, default=8000)
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0)
    parser.add_argument("--mu", type=float, default=0.1)
    parser.add_argument("--skip-emmet-above", type=int, default=0, help="0 = run every size")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        directory, method, n = args.child[0], args.child[1], int(args.child[2])
        timings, rel, rss = run_row(directory, method, n, args.lam, args.mu)
        print(f"{timings['residual']:.4f} {timings['solve']:.4f} {timings['total']:.4f} {rel:.3e} {rss:.0f}")
        return

    print(f"numpy {np.__version__}; BLAS: ", end="")
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        print(cfg.get("name"), cfg.get("version"))
    except Exception:
        print("unknown")
    print(f"solver: {SOLVER}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
          f"threads={os.environ.get('OPENBLAS_NUM_THREADS', '(default)')} cpus={os.cpu_count()}")
    print(f"W0 {D_OUT}x{D_IN} float32, C0 {D_IN}x{D_IN} float64 from {args.preservation_keys} keys, "
          f"lambda={args.lam}, mu={args.mu} (n>1 only)")
    with tempfile.TemporaryDirectory(prefix="bench-solvers-") as directory:
        setup = make_fixtures(directory, args.preservation_keys)
        print(f"fixture setup (C0 = K0^T K0 / m): {setup:.2f} s")
        print(f"{'method':<6} {'n':>6} {'W0K s':>8} {'solve s':>9} {'total s':>9} {'rel resid':>10} {'peak RSS MB':>12}")
        for method in args.methods.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                if method == "rome" and n != 1:
                    continue
                if method == "emmet" and args.skip_emmet_above and n > args.skip_emmet_above:
                    print(f"{method:<6} {n:>6}  skipped (--skip-emmet-above)")
                    continue
                out = subprocess.run([sys.executable, __file__, "--lambda", str(args.lam), "--mu", str(args.mu),
                                      "--child", directory, method, str(n)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{method:<6} {n:>6}  failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                r, s, t, rel, rss = out.stdout.split()
                print(f"{method:<6} {n:>6} {float(r):>8.3f} {float(s):>9.3f} {float(t):>9.3f} {rel:>10} {rss:>12}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
