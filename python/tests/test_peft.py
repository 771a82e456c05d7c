"""PEFT's own loader against mvc's LoRA export and import: PeftModel.from_pretrained +
merge_and_unload of 'mvc export --lora' equals the checked-out model up to PEFT's Float32
rounding, and a PEFT-made adapter imported with 'mvc import --lora' does the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mvc
from conftest import MODELS, mvc as run_mvc

peft = pytest.importorskip("peft")


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to Float32 rounding: PEFT merges W + s·B·A in Float32 (and an exported range is
    re-factorized), mvc rounds one Float64 sum; relative Frobenius error below 1e-6."""
    difference = float((a.double() - b.double()).norm())
    return difference <= 1e-6 * float(b.double().norm()) + 1e-30


def test_export_lora_loads_in_peft(tmp_path: Path) -> None:
    build, edited, _ = MODELS["bert"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    base = repo.head().id
    g = torch.Generator().manual_seed(3)
    for i in range(3):
        u, v = torch.randn(128, generator=g), 1e-2 * torch.randn(64, generator=g)
        repo.commit_factors({edited: (u, v)}, model=model, message=f"edit {i}")
    adapter = tmp_path / "adapter"
    run_mvc(repo.root, "export", "--lora", str(adapter), f"{base}..HEAD")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    fresh = build()  # the base weights
    merged = peft.PeftModel.from_pretrained(fresh, str(adapter)).merge_and_unload()
    state = model.state_dict()
    for name, tensor in merged.state_dict().items():
        if name == edited:
            assert not torch.equal(tensor, build().state_dict()[name])
        assert close(tensor, state[name]), name


def test_peft_adapter_imported(tmp_path: Path) -> None:
    build, edited, _ = MODELS["bert"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    module = edited.rpartition(".")[0]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=[module], init_lora_weights=False)
    peft_model = peft.get_peft_model(build(), config)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    merged = peft_model.merge_and_unload()
    run_mvc(repo.root, "import", "--lora", str(adapter), "-m", "peft adapter")
    repo.checkout("main", model, force=True)
    state = model.state_dict()
    for name, tensor in merged.state_dict().items():
        assert close(tensor, state[name]), name
    assert repo.head().changes[0].rank == 4
