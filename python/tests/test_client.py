"""Round trips of real transformers models through the client: factors committed from memory,
whole-tensor commits, checkouts of the loaded model, all compared with torch.equal against the
working model and against from_pretrained of 'mvc checkout REV -o DIR'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import mvc

transformers = pytest.importorskip("transformers", reason="the round trips build transformers models")
AutoModel, AutoModelForCausalLM = transformers.AutoModel, transformers.AutoModelForCausalLM
from conftest import MODELS, model_hash, mvc as run_mvc


def working_tensors(repo: mvc.Repo) -> dict[str, torch.Tensor]:
    folder = repo.root / "model"
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def assert_agree(repo: mvc.Repo, model: torch.nn.Module) -> None:
    """Memory, working model and HEAD's listing agree bit for bit."""
    state = model.state_dict()
    working = working_tensors(repo)
    assert set(working) == set(repo.tensors())
    for name, tensor in working.items():
        assert torch.equal(state[name].cpu(), tensor), name


def from_checkout(repo: mvc.Repo, rev: str, tmp: Path, model: torch.nn.Module) -> torch.nn.Module:
    """from_pretrained of 'mvc checkout REV -o DIR/': the folder holds the weights and the tracked
    config.json, generation_config.json (nothing copied by hand)."""
    out = tmp / f"out-{rev.replace('~', '_')}"
    run_mvc(repo.root, "checkout", rev, "-o", f"{out}/")
    assert (out / "config.json").read_bytes() == (repo.root / "model" / "config.json").read_bytes()
    loader = AutoModelForCausalLM if hasattr(model, "lm_head") else AutoModel
    dtype = next(model.parameters()).dtype
    return loader.from_pretrained(str(out), dtype=dtype).eval()


def edit_in_memory(model: torch.nn.Module, name: str, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A rank-one (u, v) for the weight `name`, input side first, applied in the parameter's dtype."""
    weight = model.get_parameter(name)
    module = model.get_submodule(name.rpartition(".")[0])
    g = torch.Generator().manual_seed(seed)
    if isinstance(module, torch.nn.Linear):
        d_in, d_out = module.in_features, module.out_features
    else:
        d_in, d_out = weight.shape
    u = torch.randn(d_in, generator=g)
    v = torch.randn(d_out, generator=g) * scale
    update = torch.outer(v, u) if isinstance(module, torch.nn.Linear) else torch.outer(u, v)
    with torch.no_grad():
        weight += update.to(weight.dtype)
    return u, v


@pytest.mark.parametrize("kind", list(MODELS))
def test_round_trip(kind: str, tmp_path: Path) -> None:
    build, edited, shard_size = MODELS[kind]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model, max_shard_size=shard_size)
    if shard_size is not None:
        assert len(list((repo.root / "model").glob("*.safetensors"))) >= 3
    hashes = {repo.head().id: model_hash(model)}
    assert_agree(repo, model)

    # 1. The editor applied the update in memory, then commits its factors.
    u, v = edit_in_memory(model, edited, 1e-2, seed=1)
    result = repo.commit_factors({edited: (u, v)}, model=model, message="edit 1", method="rome",
                                 facts={"subject": "Eiffel Tower", "target_new": "Rome"}, hyperparameters={"layer": 1})
    assert result.commit.method == "rome" and result.commit.changes[0].storage == "low_rank"
    assert result.commit.changes[0].rank == 1
    assert_agree(repo, model)
    hashes[result.commit.id] = model_hash(model)

    # 2. Factors committed before they are applied: memory becomes HEAD + update; float64 noted.
    other = edited.replace(".1.", ".0.")
    g = torch.Generator().manual_seed(7)
    weight = model.get_parameter(other)
    d_in = weight.shape[1] if isinstance(model.get_submodule(other.rpartition(".")[0]), torch.nn.Linear) else weight.shape[0]
    d_out = weight.numel() // d_in
    before = weight.detach().clone()
    result = repo.commit_factors({other: (torch.randn(d_in, 2, generator=g, dtype=torch.float64),
                                          1e-2 * torch.randn(d_out, 2, generator=g, dtype=torch.float64))},
                                 model=model, message="edit 2")
    assert result.notes and "float64" in result.notes[0] and result.rounded_from_float64 == [other]
    assert not torch.equal(before, weight.detach())
    assert_agree(repo, model)
    hashes[result.commit.id] = model_hash(model)

    # 3. Whatever changed in memory (a bias and a LayerNorm: not low-rank), found by comparing with HEAD.
    biases = [n for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n.lower()][:2]
    with torch.no_grad():
        for n in biases:
            model.get_parameter(n).add_(0.5)
    info = repo.commit(model, "batch of norms")
    assert {c.tensor for c in info.changes} == set(biases)
    assert_agree(repo, model)
    hashes[info.id] = model_hash(model)

    # 4. The same with the names given (and --compact, which vectors store complete anyway).
    with torch.no_grad():
        model.get_parameter(biases[0]).mul_(0.5)
    info = repo.commit(model, "named", changed=[biases[0]], compact=True)
    assert [c.tensor for c in info.changes] == [biases[0]]
    hashes[info.id] = model_hash(model)

    # 5. The loaded model moves between commits; HEAD, working model and memory agree each time.
    ids = [c.id for c in repo.log()]
    for rev, expected in (("main~3", ids[3]), ("main~1", ids[1]), ("main", ids[0]), (ids[2], ids[2])):
        repo.checkout(rev, model)
        assert repo.held_commit(model) == expected and repo.head().id == expected
        assert model_hash(model) == hashes[expected], rev
        assert_agree(repo, model)
    reloaded = from_checkout(repo, ids[1], tmp_path, model)
    repo.checkout(ids[1], model)
    state = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(state[name], tensor), name


def test_tied_weights_written_once_through_stored_name(tmp_path: Path) -> None:
    """GPT-2's lm_head.weight is transformer.wte.weight: the file holds only the latter."""
    build, _, _ = MODELS["gpt2"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    assert "lm_head.weight" not in repo.tensors() and "transformer.wte.weight" in repo.tensors()
    with torch.no_grad():
        model.lm_head.weight[3].add_(1.0)  # the same storage as wte
    info = repo.commit(model, "through lm_head", changed=["lm_head.weight"])
    assert [c.tensor for c in info.changes] == ["transformer.wte.weight"]
    repo.checkout("HEAD~1", model)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert_agree(repo, model)


def test_attach_model_loaded_with_from_pretrained(tmp_path: Path) -> None:
    build, edited, _ = MODELS["gpt2"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    u, v = edit_in_memory(model, edited, 1e-2, seed=3)
    repo.commit_factors({edited: (u, v)}, model=model, message="e")
    loaded = AutoModelForCausalLM.from_pretrained(str(repo.root / "model")).eval()
    again = mvc.Repo(repo.root)
    with pytest.raises(mvc.MVCError, match="holds no commit"):
        again.checkout("HEAD~1", loaded)
    again.attach(loaded)
    again.checkout("HEAD~1", loaded)
    assert_agree(again, loaded)


@pytest.mark.parametrize("kind", ["gpt2", "llama-bf16-sharded"])
def test_checkout_folder_loads_with_from_pretrained(kind: str, tmp_path: Path) -> None:
    """'mvc checkout REV -o DIR' gives a folder AutoModel.from_pretrained loads as it is: the config
    tracked beside the weights, a config change carried by a branch, weights torch.equal."""
    build, edited, shard_size = MODELS[kind]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model, max_shard_size=shard_size)
    dtype = next(model.parameters()).dtype
    u, v = edit_in_memory(model, edited, 1e-2, seed=3)
    repo.commit_factors({edited: (u, v)}, model=model, message="edit", method="rome")
    edited_state = {k: t.clone() for k, t in model.state_dict().items()}

    # A branch that changes config.json only: commit picks it up, checkout -o writes it.
    run_mvc(repo.root, "branch", "cfg")
    run_mvc(repo.root, "switch", "cfg")
    config = repo.root / "model" / "config.json"
    original = config.read_bytes()
    config.write_text(json.dumps({**json.loads(original), "mvc_marker": "cfg"}, indent=2))
    run_mvc(repo.root, "commit", "-q", "-m", "no cache")
    run_mvc(repo.root, "switch", "main")
    assert config.read_bytes() == original

    for rev, marker in (("main", None), ("cfg", "cfg")):
        out = tmp_path / f"out-{rev}"
        run_mvc(repo.root, "checkout", rev, "-o", f"{out}/")
        loaded = AutoModel.from_pretrained(str(out), dtype=dtype).eval()
        assert getattr(loaded.config, "mvc_marker", None) == marker
        base = getattr(model, "base_model_prefix", "")
        for name, tensor in loaded.state_dict().items():
            source = edited_state.get(name, edited_state.get(f"{base}.{name}"))
            assert source is not None, name
            assert torch.equal(source, tensor), name


def test_accumulator_follows_keys_through_commit_factors(tmp_path: Path) -> None:
    """keys= of commit_factors feed the accumulator (AlphaEdit's cache_c, ENCORE's SEQ_CACHE) that
    'mvc edit --method alphaedit|encore' uses; a checkout back excludes the later keys."""
    build, edited, _ = MODELS["gpt2"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    empty = repo.accumulator(edited)
    assert empty.edits == [] and empty.key_count == 0 and tuple(empty.matrix.shape) == (0, 0)
    all_keys = []
    for seed in (1, 2, 3):
        u, v = edit_in_memory(model, edited, 1e-2, seed=seed)
        keys = torch.randn(2, u.shape[0], generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        result = repo.commit_factors({edited: (u, v)}, model=model, message=f"edit {seed}", method="rome", keys=keys)
        all_keys.append((result.commit.id, keys))
    acc = repo.accumulator(edited)
    expected = sum(k.T @ k for _, k in all_keys)
    assert acc.key_count == 6 and [e.commit for e in acc.edits] == [c for c, _ in all_keys]
    assert acc.matrix.dtype == torch.float64
    assert torch.allclose(acc.matrix, expected, rtol=1e-12, atol=1e-12)
    first_two = repo.accumulator(edited, all_keys[1][0])
    assert torch.allclose(first_two.matrix, sum(k.T @ k for _, k in all_keys[:2]), rtol=1e-12, atol=1e-12)
    # A commit that changed the tensor without keys makes the sum unknown: refused by name.
    u, v = edit_in_memory(model, edited, 1e-2, seed=9)
    plain = repo.commit_factors({edited: (u, v)}, model=model, message="no keys", method="rome")
    with pytest.raises(mvc.MVCError, match="no keys"):
        repo.accumulator(edited)
    assert plain.commit.id
