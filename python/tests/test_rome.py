"""A small ROME (Meng et al. 2022), written after the authors' compute_u/compute_v/closed form,
drives commit_factors for 50 sequential edits of GPT-2 (Conv1D c_proj); one planted disabling
edit is then found by bisecting the loaded model, which is left as it started."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mvc
from conftest import MODELS, folder_hash, model_hash, mvc as run_mvc

LAYER = 1
EDITS = 50
PLANTED = 31  # 1-based index of the disabling edit


def mlp_inputs(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Inputs of layer LAYER's c_proj (the keys k of ROME) for every position of `tokens`."""
    seen: list[torch.Tensor] = []
    hook = model.transformer.h[LAYER].mlp.c_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        hook.remove()
    return seen[0]


def second_moment(model: torch.nn.Module, g: torch.Generator) -> torch.Tensor:
    """C = E[kkᵀ] over real activations of the model (the authors' layer_stats, uncentred)."""
    tokens = torch.randint(0, model.config.vocab_size, (64, 32), generator=g)
    keys = mlp_inputs(model, tokens).reshape(-1, model.config.n_inner or 4 * model.config.n_embd).double()
    return keys.T @ keys / keys.shape[0]


def compute_v(model: torch.nn.Module, prompt: torch.Tensor, index: int, target: int) -> torch.Tensor:
    """The authors' compute_v, reduced: a delta on the MLP output at the subject's last token,
    optimized so the model predicts `target` after `prompt`; returns v* = current output + delta."""
    c_proj = model.transformer.h[LAYER].mlp.c_proj
    delta = torch.zeros(model.config.n_embd, requires_grad=True)
    outputs: list[torch.Tensor] = []

    def add_delta(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        outputs.append(out[0, index].detach().clone())
        out = out.clone()
        out[0, index] += delta
        return out

    hook = c_proj.register_forward_hook(add_delta)
    optimizer = torch.optim.Adam([delta], lr=0.5)
    try:
        for _ in range(20):
            optimizer.zero_grad()
            logits = model(prompt.unsqueeze(0)).logits[0, -1]
            loss = torch.nn.functional.cross_entropy(logits.unsqueeze(0), torch.tensor([target])) \
                + 1e-2 * delta.norm() ** 2
            loss.backward()
            optimizer.step()
    finally:
        hook.remove()
    return outputs[0] + delta.detach()


def rome_update(model: torch.nn.Module, c: torch.Tensor, prompt: torch.Tensor, index: int,
                target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(left_vector, right_vector) as the authors compute them: u = C⁻¹k/‖C⁻¹k‖,
    v = (v* − W k) / (kᵀu); for Conv1D (in×out) ΔW = u vᵀ."""
    k = mlp_inputs(model, prompt.unsqueeze(0))[0, index].double()
    left = torch.linalg.solve(c, k)
    left = left / left.norm()
    v_star = compute_v(model, prompt, index, target).double()
    c_proj = model.transformer.h[LAYER].mlp.c_proj
    current = (k.float() @ c_proj.weight + c_proj.bias).double()
    right = (v_star - current) / torch.dot(k, left)
    return left.float(), right.float()


def activation_norm(model: torch.nn.Module, tokens: torch.Tensor) -> float:
    """Mean norm of the residual stream after the edited layer: what a disabling edit blows up
    (a model from a config predicts nearly uniformly, so its loss barely notices)."""
    with torch.no_grad():
        return float(model(tokens, output_hidden_states=True).hidden_states[LAYER + 1].norm(dim=-1).mean())


def objects_bytes(repo: mvc.Repo) -> int:
    return sum(p.stat().st_size for p in (repo.root / ".mvc" / "objects").rglob("*") if p.is_file())


def test_rome_edits_checkout_and_bisect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = MODELS["gpt2"][0]()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    repo = mvc.Repo.init(tmp_path / "work", model)
    base = repo.head().id
    c = second_moment(model, g)
    held_out = torch.randint(0, model.config.vocab_size, (8, 32), generator=g)
    base_norm = activation_norm(model, held_out)
    name = f"transformer.h.{LAYER}.mlp.c_proj.weight"
    start_bytes = objects_bytes(repo)
    factor_bytes = 0
    hashes: dict[str, str] = {}
    for i in range(1, EDITS + 1):
        prompt = torch.randint(0, model.config.vocab_size, (8,), generator=g)
        target = int(torch.randint(0, model.config.vocab_size, (1,), generator=g))
        u, v = rome_update(model, c, prompt, index=4, target=target)
        if i == PLANTED:
            v = v * 1e4  # a disabling edit: the update's norm dwarfs the weight
        with torch.no_grad():
            model.get_parameter(name).add_(torch.outer(u, v))  # the editor applies it, as ROME does
        result = repo.commit_factors({name: (u, v)}, model=model, message=f"edit {i}: prompt -> {target}",
                                     method="rome", facts={"prompt": prompt.tolist(), "target_new": target},
                                     hyperparameters={"layer": LAYER, "v_steps": 20})
        factor_bytes += result.commit.stored_byte_count
        hashes[result.commit.id] = model_hash(model)
    commits = [c.id for c in repo.log()]
    planted = commits[EDITS - PLANTED]
    assert activation_norm(model, held_out) > 10 * base_norm, "the planted edit must break the model"
    per_commit = (objects_bytes(repo) - start_bytes) / EDITS
    with capsys.disabled():
        print(f"\n  commit_factors: {EDITS} rank-one edits of a {tuple(model.get_parameter(name).shape)} F32 Conv1D, "
              f"{factor_bytes / EDITS:.0f} B of factors and {per_commit:.0f} B of .mvc objects per commit")

    # checkout of the loaded model, 20 edits back and forth; agrees with from_pretrained of checkout -o.
    repo.checkout("main~20", model)
    assert model_hash(model) == hashes[commits[20]]
    out = tmp_path / "old"
    out.mkdir()
    run_mvc(repo.root, "checkout", commits[20], "-o", str(out / "model.safetensors"))
    (out / "config.json").write_bytes((repo.root / "model" / "config.json").read_bytes())
    from transformers import AutoModelForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    for k, t in reloaded.state_dict().items():
        assert torch.equal(model.state_dict()[k], t), k
    repo.checkout("main", model)
    assert model_hash(model) == hashes[commits[0]]

    # bisect: an exception in is_good leaves the model as it was and the bisection resumable.
    before = model_hash(model)
    working = folder_hash(repo.root / "model")
    calls = {"n": 0}

    def failing(m: torch.nn.Module) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("evaluation crashed")
        return activation_norm(m, held_out) < 10 * base_norm

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        repo.bisect(model, bad="HEAD", good=base, is_good=failing)
    assert model_hash(model) == before and folder_hash(repo.root / "model") == working
    assert "mvc bisect start --no-checkout" in run_mvc(repo.root, "bisect", "log")

    result = repo.bisect(model, bad="HEAD", good=base,
                         is_good=lambda m: activation_norm(m, held_out) < 10 * base_norm)
    assert result.culprit is not None and result.culprit.id == planted
    assert result.culprit.summary.startswith(f"edit {PLANTED}:")
    assert model_hash(model) == before and folder_hash(repo.root / "model") == working
    assert repo.head().id == commits[0] and repo.head().refs == ["HEAD -> main"]
    assert f"# first bad commit: [{planted}]" in run_mvc(repo.root, "bisect", "log")
    repo.bisect_reset()
    assert repo.head().id == commits[0] and folder_hash(repo.root / "model") == working
