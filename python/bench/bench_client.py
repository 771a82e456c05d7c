"""Benchmark of the Python client on a Llama-shaped bf16 model saved in shards (issue 13).

Side by side, each contender in its own process (so peak memory is its own):
  save+commit     per rank-one edit: the edited model's save_pretrained + 'mvc commit'
  commit_factors  per rank-one edit: Repo.commit_factors (factors stored as given)
  checkout        the loaded model moved 1 and 40 edits away (only differing tensors copied)
  from_pretrained the whole model loaded again, for comparison

Default geometry is Llama-3-8B's (hidden 4096, intermediate 14336, 32 layers, vocab 128256,
bf16, ~16 GB in 4 shards); --scale N divides hidden, intermediate, vocab and layers by N for a
run that fits a busy machine. A run whose model does not fit in the available memory (1.25× the
model: each contender holds one loaded copy) is skipped and says so.

    python python/bench/bench_client.py --scale 8 --edits 40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYER = 17


def geometry(scale: int) -> dict[str, int]:
    return {"hidden_size": 4096 // scale, "intermediate_size": 14336 // scale,
            "num_hidden_layers": max(2, 32 // scale), "vocab_size": 128256 // scale,
            "num_attention_heads": max(1, 32 // scale), "num_key_value_heads": max(1, 8 // scale)}


def available_memory() -> int:
    """MemAvailable: free memory plus the page cache the kernel can drop (the model just written
    sits in the page cache, so MemFree alone would call a machine with room for it full)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def make_model(folder: Path, scale: int, shards: int) -> int:
    """Writes random bf16 weights of the geometry straight to safetensors shards (faster than
    initializing the module), with config.json; returns the byte count."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    g = geometry(scale)
    config = LlamaConfig(**g, max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype="bfloat16")
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    h, i, v, kv = g["hidden_size"], g["intermediate_size"], g["vocab_size"], g["num_key_value_heads"]
    head = h // g["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(g["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv * head, h),
                       p + "self_attn.v_proj.weight": (kv * head, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    total = sum(torch.Size(s).numel() * 2 for s in shapes.values())
    per_shard = total / shards
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        if size >= per_shard * len(groups) and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        size += torch.Size(shape).numel() * 2
    gen = torch.Generator().manual_seed(0)
    weight_map = {}
    for k, names in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16) for n in names}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in names})
        del tensors
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return total


def rank_one(model, gen) -> tuple:
    import torch
    layer = min(LAYER, model.config.num_hidden_layers - 1)
    name = f"model.layers.{layer}.mlp.down_proj.weight"
    w = model.get_parameter(name)
    u = torch.randn(w.shape[1], generator=gen)
    v = torch.randn(w.shape[0], generator=gen) * 1e-3
    return name, u, v


def contender(kind: str, work: Path, edits: int) -> dict:
    """Runs in its own process."""
    import torch
    from transformers import AutoModelForCausalLM
    import mvc
    gen = torch.Generator().manual_seed(1)
    out: dict = {"kind": kind}
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(work / "model"), dtype=torch.bfloat16).eval()
    out["from_pretrained_s"] = time.perf_counter() - t
    repo = mvc.Repo(work)
    repo.attach(model, verify=False)  # just loaded from the working model at HEAD
    times = []
    for k in range(edits):
        name, u, v = rank_one(model, gen)
        with torch.no_grad():
            model.get_parameter(name).add_(torch.outer(v, u).to(torch.bfloat16))
        t = time.perf_counter()
        if kind == "save+commit":
            model.save_pretrained(str(work / "model"), max_shard_size=shard_size(work))
            subprocess.run([os.environ["MVC_BINARY"], "commit", "-q", "-m", f"edit {k}"], cwd=work, check=True)
        else:
            repo.commit_factors({name: (u, v)}, model=model, message=f"edit {k}", method="rome")
        times.append(time.perf_counter() - t)
    out["edit_s"] = times
    out["stored_per_edit"] = [c.stored_byte_count for c in repo.log(max_count=edits)]
    if kind == "commit_factors":
        for distance in (1, edits):
            t = time.perf_counter()
            repo.checkout(f"main~{distance}", model)
            out[f"checkout_{distance}_s"] = time.perf_counter() - t
            repo.checkout("main", model)
    out["peak_mib"] = peak_mib()
    return out


def shard_size(work: Path) -> str:
    index = json.loads((work / "model" / "model.safetensors.index.json").read_text())
    shards = len(set(index["weight_map"].values()))
    return f"{index['metadata']['total_size'] // shards // 2**20 + 1}MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(contender(args.contender, Path(args.work), args.edits)))
        return
    root = Path(tempfile.mkdtemp(prefix="mvc-bench-", dir=os.environ.get("MVC_BENCH_DIR")))
    try:
        base = root / "base"
        t = time.perf_counter()
        size = make_model(base / "model", args.scale, args.shards)
        print(f"model: {geometry(args.scale)} bf16, {size / 2**30:.2f} GiB in {args.shards} shards "
              f"(generated in {time.perf_counter() - t:.1f} s)")
        available = available_memory()
        if 1.25 * size > available:
            print(f"skipped: the model needs ~{1.25 * size / 2**30:.1f} GiB in memory, "
                  f"{available / 2**30:.1f} GiB available")
            return
        binary = os.environ["MVC_BINARY"]
        subprocess.run([binary, "init", "model", "-q"], cwd=base, check=True)
        for kind in ("save+commit", "commit_factors"):
            work = root / kind.replace("+", "_")
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(work)], check=True)
            edits = min(args.edits, 5) if kind == "save+commit" else args.edits
            proc = subprocess.run([sys.executable, __file__, "--contender", kind, "--work", str(work),
                                   "--edits", str(edits)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{kind}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            edit = sorted(r["edit_s"])[len(r["edit_s"]) // 2]
            stored = sorted(r["stored_per_edit"])[len(r["stored_per_edit"]) // 2]
            line = (f"{kind:15s} per edit {edit:.2f} s (median of {len(r['edit_s'])}), stored {stored / 1024:.1f} KiB, "
                    f"from_pretrained {r['from_pretrained_s']:.1f} s, peak {r['peak_mib']:.0f} MiB")
            if "checkout_1_s" in r:
                line += f"; checkout 1 edit away {r['checkout_1_s']:.2f} s, {args.edits} away {r[f'checkout_{args.edits}_s']:.2f} s"
            print(line)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
