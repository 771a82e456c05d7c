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


def test_delta_without_adapter_config_needs_a_scale(tmp_path: Path) -> None:
    """A LoRA file alone does not say lora_alpha/r: mvc refuses rather than apply scale 1, takes
    --scale, prints the scale it used, and refuses a --scale that contradicts the config."""
    import shutil
    import subprocess
    import os
    from conftest import folder_hash
    build, edited, _ = MODELS["bert"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=[edited.rpartition(".")[0]], init_lora_weights=False)
    peft_model = peft.get_peft_model(build(), config)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", lone / "adapter_model.safetensors")

    def commit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([os.environ["MVC_BINARY"], "commit", "-m", "lora", *args], cwd=repo.root,
                              capture_output=True, text=True)

    before = folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")
    refused = commit("--delta", str(lone / "adapter_model.safetensors"))
    assert refused.returncode == 128 and "no adapter_config.json is beside it" in refused.stderr
    assert "hint: give the scale" in refused.stderr
    contradicted = commit("--delta", str(adapter / "adapter_model.safetensors"), "--scale", "3")
    assert contradicted.returncode == 128 and "disagrees with lora_alpha/r = 2" in contradicted.stderr
    assert (folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")) == before

    done = commit("--delta", str(lone / "adapter_model.safetensors"), "--scale", "2")
    assert done.returncode == 0, done.stderr
    assert "LoRA scale lora_alpha/r = 2.0 (from --scale)" in done.stderr
    repo.checkout("main", model, force=True)
    merged = peft_model.merge_and_unload().state_dict()
    for name, tensor in model.state_dict().items():
        assert close(tensor, merged[name]), name


def test_per_module_scales_and_refusals_by_name(tmp_path: Path) -> None:
    """rank_pattern/alpha_pattern scale each module as PEFT does; what is not a low-rank addition
    (DoRA, modules_to_save, trained biases) is refused by name, nothing changed."""
    import subprocess
    import os
    from conftest import folder_hash
    build, edited, _ = MODELS["bert"]
    model = build()
    repo = mvc.Repo.init(tmp_path / "work", model)
    first = edited.rpartition(".")[0]
    second = first.replace(".1.", ".0.")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=[first, second], init_lora_weights=False,
                             rank_pattern={second: 2}, alpha_pattern={second: 16})
    peft_model = peft.get_peft_model(build(), config)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    run = lambda *args: subprocess.run([os.environ["MVC_BINARY"], *args], cwd=repo.root, capture_output=True,
                                       text=True)
    done = run("import", "--lora", str(adapter), "-m", "patterned")
    assert done.returncode == 0, done.stderr
    repo.checkout("main", model, force=True)
    merged = peft_model.merge_and_unload().state_dict()
    for name, tensor in model.state_dict().items():
        assert close(tensor, merged[name]), name

    before = folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")
    for key, value, words in (("use_dora", True, "DoRA adapters are not low-rank additions"),
                              ("modules_to_save", ["pooler.dense"], "modules_to_save replaces whole modules"),
                              ("bias", "all", "bias 'all' trains biases")):
        changed = json.loads((adapter / "adapter_config.json").read_text())
        changed[key] = value
        bad = tmp_path / f"bad-{key}"
        bad.mkdir()
        (bad / "adapter_config.json").write_text(json.dumps(changed))
        (bad / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
        for args in (("import", "--lora", str(bad), "-m", "x"),
                     ("commit", "-m", "x", "--delta", str(bad / "adapter_model.safetensors"))):
            refused = run(*args)
            assert refused.returncode == 128 and words in refused.stderr, (key, args, refused.stderr)
    assert (folder_hash(repo.root / ".mvc"), folder_hash(repo.root / "model")) == before
