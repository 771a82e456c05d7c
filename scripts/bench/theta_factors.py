#!/usr/bin/env python3
"""Side-load file for git-theta's low-rank update type.

Usage: theta_factors.py OLD.safetensors NEW.safetensors OUT.safetensors
Finds the tensors that differ between OLD and NEW (an editor's rank-one rewrite) and writes, for each,
"NAME/R" (rows x 1) and "NAME/C" (1 x cols) in float32 with R @ C ~= NEW - OLD (rank-one, found by a
few power iterations in float64). This is what an editor that knows its factors would hand to
`git theta add --update-type low-rank --update-data OUT`; it is not timed as part of the commit.
"""
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def main():
    old, new, out = load_file(sys.argv[1]), load_file(sys.argv[2]), sys.argv[3]
    update = {}
    for name, w in new.items():
        if w.ndim != 2 or np.array_equal(w, old[name]):
            continue
        d = w.astype(np.float64) - old[name].astype(np.float64)
        v = np.ones(d.shape[1])
        for _ in range(4):
            u = d @ v
            v = d.T @ u
            v /= np.linalg.norm(v)
        u = d @ v
        update[name + "/R"] = u[:, None].astype(np.float32)
        update[name + "/C"] = v[None, :].astype(np.float32)
    save_file(update, out)


if __name__ == "__main__":
    main()
