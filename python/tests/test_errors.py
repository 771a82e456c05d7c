"""Every refusal leaves the repository (.mvc), the working model and the loaded model unchanged,
and names what it refused."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

import mvc
from conftest import MODELS, folder_hash, model_hash, mvc as run_mvc

EDITED = "transformer.h.1.mlp.c_proj.weight"


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[tuple[mvc.Repo, nn.Module]]:
    model = MODELS["gpt2"][0]()
    repo = mvc.Repo.init(tmp_path / "work", model)
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        u, v = torch.randn(256, generator=g), 1e-2 * torch.randn(64, generator=g)
        repo.commit_factors({EDITED: (u, v)}, model=model, message=f"edit {i}")
    yield repo, model


def refused(repo: mvc.Repo, model: nn.Module, action: Callable[[], object], match: str) -> mvc.MVCError:
    before = (folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model"), model_hash(model))
    with pytest.raises(mvc.MVCError, match=match) as info:
        action()
    after = (folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model"), model_hash(model))
    assert after == before, "a refusal changed the repository, the working model or the loaded model"
    return info.value


def test_factor_shapes_refused_with_expected_shapes(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    error = refused(repo, model, lambda: repo.commit_factors({EDITED: (torch.randn(64), torch.randn(256))},
                                                             model=model, message="swapped"),
                    r"must be u \(256\[, r\]\) and v \(64\[, r\]\)")
    assert "Conv1D" in str(error)
    refused(repo, model, lambda: repo.commit_factors({"transformer.wte.weight": (torch.randn(64), torch.randn(128))},
                                                     model=model, message="embedding"), "belongs to a Embedding")
    refused(repo, model, lambda: repo.commit_factors({"transformer.h.0.ln_1.weight": (torch.randn(64), torch.randn(1))},
                                                     model=model, message="norm"), "belongs to a LayerNorm")
    refused(repo, model, lambda: repo.commit_factors({"no.such.weight": (torch.randn(3), torch.randn(3))},
                                                     model=model, message="x"), "not a tensor of the repository")


def test_memory_neither_head_nor_head_plus_update(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    with torch.no_grad():
        model.get_parameter(EDITED)[0, 0] += 1.0  # some other change
    u, v = torch.randn(256), torch.randn(64)
    refused(repo, model, lambda: repo.commit_factors({EDITED: (u, v)}, model=model, message="x"),
            "neither HEAD's tensor nor HEAD \\+ the factors' update")


def test_checkout_refuses_changed_model_unless_forced(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    with torch.no_grad():
        model.transformer.h[0].ln_1.bias.add_(1.0)
    refused(repo, model, lambda: repo.checkout("main~1", model), "changed since it was recorded")
    refused(repo, model, lambda: repo.checkout("no-such-branch", model), "no-such-branch")
    repo.checkout("main~1", model, force=True)
    mvc.Repo(repo.root).attach(model)  # compares every tensor: force left memory exactly at main~1


def test_dtype_meta_and_quantized_refused_by_name(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    model.double()
    refused(repo, model, lambda: repo.checkout("main~1", model, force=True), "is torch.float64 in memory but F32")
    model.float()
    model.transformer.h[0].ln_1.weight = nn.Parameter(torch.empty(64, device="meta"))
    refused(repo, model, lambda: repo.checkout("main~1", model, force=True),
            "'transformer.h.0.ln_1.weight' is on the meta device")


def test_quantized_parameter_refused(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    try:
        quantized = torch.quantize_per_tensor(torch.randn(64), 0.1, 0, torch.qint8)
        model.transformer.h[0].ln_1.weight = nn.Parameter(quantized, requires_grad=False)
    except (RuntimeError, TypeError) as error:
        pytest.skip(f"this torch cannot hold a quantized parameter: {error}")
    refused(repo, model, lambda: repo.checkout("main~1", model, force=True), "quantized")


def test_dirty_working_model_refused(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    path = repo.root / "model" / "model.safetensors"
    with open(path, "r+b") as f:  # another editor wrote into the working model
        (n,) = struct.unpack("<Q", f.read(8))
        begin = json.loads(f.read(n))["transformer.h.0.ln_1.bias"]["data_offsets"][0]
        f.seek(8 + n + begin)
        f.write(b"\x00\x00\x80\x3f")
    with torch.no_grad():
        model.transformer.h[0].ln_2.bias.add_(1.0)
    refused(repo, model, lambda: repo.commit(model, "x"), "uncommitted changes")
    u, v = torch.randn(256), 1e-2 * torch.randn(64)
    refused(repo, model, lambda: repo.commit_factors({EDITED: (u, v)}, model=model, message="x"),
            "uncommitted|changed|neither")


def test_failed_mvc_commit_puts_working_model_back(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    with torch.no_grad():
        model.transformer.h[0].ln_2.bias.add_(1.0)
    with open(repo.root / ".mvc" / "lock", "a") as lock:  # another mvc holds the repository
        fcntl.flock(lock, fcntl.LOCK_EX)
        refused(repo, model, lambda: repo.commit(model, "x"), "another mvc is running")


def test_bisect_refusals_change_nothing(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    refused(repo, model, lambda: repo.bisect(model, bad="main~2", good="main", is_good=lambda m: True),
            "not an ancestor")
    # A bad answer from is_good stops like an exception: model back, bisection kept for a resume.
    before = folder_hash(repo.root / "model"), model_hash(model)
    with pytest.raises(mvc.MVCError, match="must return True, False or None"):
        repo.bisect(model, bad="main", good="main~2", is_good=lambda m: 3)
    assert (folder_hash(repo.root / "model"), model_hash(model)) == before
    result = repo.bisect(model, bad="main", good="main~2", is_good=lambda m: False)
    assert result.culprit is not None and result.culprit.summary == "edit 0"
    repo.bisect_reset()


def test_bisect_probes_match_the_cli(setup: tuple[mvc.Repo, nn.Module]) -> None:
    repo, model = setup
    u, v = torch.ones(256), 1e-2 * torch.ones(64)
    for i in range(2, 9):
        repo.commit_factors({EDITED: (u, v)}, model=model, message=f"edit {i}")
    ids = [c.id for c in repo.log()]  # newest first: main, main~1, ..., base
    run_mvc(repo.root, "bisect", "start", "--no-checkout", ids[0], ids[-1])
    # 9 candidates (edits 0..8): 2 probes cut them into thirds, at edits 2 and 5.
    step = repo.bisect_probes(2)
    assert step["schema"] == "mvc.bisect-probes/1" and step["status"] == "testing"
    assert step["candidate_count"] == 9 and step["largest_part"] == 3
    assert step["probes"] == [ids[-4], ids[-7]]
    # One pending at the middle: the next goes into a half.
    around = repo.bisect_probes(1, pending=[ids[-5]])
    assert around["pending"] == [ids[-5]] and len(around["probes"]) == 1 and around["probes"][0] != ids[-5]
    # jobs=1 is git's choice, the one 'mvc bisect next' gives.
    assert repo.bisect_probes(1)["probes"] == [json.loads(run_mvc(repo.root, "bisect", "next", "--json"))["commit"]]
    repo.bisect_reset()


def test_cli_factor_file_refusals(setup: tuple[mvc.Repo, nn.Module], tmp_path: Path) -> None:
    from safetensors.torch import save_file
    repo, _ = setup
    before = folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")
    cases = {
        "only-u": ({f"{EDITED}.u": torch.randn(256, 1)}, f"tensor '{EDITED}'"),
        "bad-name": ({"w": torch.randn(2, 1)}, "is neither '<tensor>.u' nor '<tensor>.v'"),
        "shape": ({f"{EDITED}.u": torch.randn(64, 1), f"{EDITED}.v": torch.randn(256, 1)},
                  r"expected u \[256, r\] and v \[64, r\]"),
        "nan": ({f"{EDITED}.u": torch.full((256, 1), float("nan")), f"{EDITED}.v": torch.randn(64, 1)}, "nan"),
    }
    for label, (tensors, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path))
        proc = subprocess.run([os.environ["MVC_BINARY"], "commit-factors", str(path), "-m", "x"],
                              cwd=repo.root, capture_output=True, text=True)
        assert proc.returncode == 128 and proc.stderr.startswith("fatal: "), (label, proc.stderr)
        assert re.search(message, proc.stderr), (label, proc.stderr)
    assert (folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")) == before
    assert "edit 1" in run_mvc(repo.root, "log", "--oneline")
