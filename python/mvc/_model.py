"""How a loaded PyTorch model maps onto a repository's tensors: names (tied parameters through
the name the file holds), dtypes, and the refusals that keep a copy bit-exact."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from ._cli import MVCError
from .types import TensorEntry

#: safetensors dtype names (as mvc lists them) and the torch dtypes that hold them bit for bit.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
if hasattr(torch, "float8_e4m3fn"):
    DTYPES["F8_E4M3"] = torch.float8_e4m3fn
    DTYPES["F8_E5M2"] = torch.float8_e5m2

Fingerprint = dict[str, tuple[int, int]]


class ModelTensors:
    """The model's tensors under the repository's names.

    ``state_dict(keep_vars=True)`` yields the live Parameters and buffers; tied parameters are
    one object under several names (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``),
    and the file holds one of them, so each object is reached through the name the file holds
    and written once.
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        state = model.state_dict(keep_vars=True)
        by_object: dict[int, list[str]] = {}
        for key, tensor in state.items():
            by_object.setdefault(id(tensor), []).append(key)
        self.tensors: dict[str, torch.Tensor] = {}
        self.stored_name: dict[str, str] = {}
        for name in names:
            tensor = state.get(name)
            if tensor is None:
                raise MVCError(f"the repository has tensor '{name}' but the model has no such parameter or buffer",
                               hint="is this the model the repository was made from? "
                                    "(names are compared with model.state_dict())")
            self.tensors[name] = tensor
            for alias in by_object[id(tensor)]:
                self.stored_name[alias] = name

    def resolve(self, name: str) -> str:
        """The repository's name for a parameter name (a tied alias included)."""
        try:
            return self.stored_name[name]
        except KeyError:
            raise MVCError(f"'{name}' is not a tensor of the repository",
                           hint="use a name of model.state_dict() that the working model holds") from None

    def fingerprint(self) -> Fingerprint:
        """Per tensor (version counter, data pointer): any in-place write through the tensor
        (``w += ...``, ``w.copy_(...)`` under no_grad, an optimizer step) bumps ``_version``, and
        a re-assigned ``.data`` moves the pointer. Writes through ``.data`` escape both; a caller
        that makes them checks out with ``force=True``."""
        return {n: (t._version, t.data_ptr()) for n, t in self.tensors.items()}

    def changed_since(self, fingerprint: Fingerprint) -> list[str]:
        now = self.fingerprint()
        return sorted(n for n in now if fingerprint.get(n) != now[n])

    def check_writable(self, entries: Iterable[TensorEntry]) -> None:
        """Refuses, by name and before anything is written, tensors a byte copy cannot fill
        exactly: another dtype than stored, another shape, meta/offloaded or quantized."""
        for entry in entries:
            tensor = self.tensors[entry.name]
            if tensor.is_meta:
                raise MVCError(f"parameter '{entry.name}' is on the meta device (offloaded or not loaded)",
                               hint="load the model fully (no device_map offload) before moving it")
            if getattr(tensor, "is_quantized", False) or hasattr(tensor, "quant_state") or \
                    type(tensor) not in (torch.Tensor, nn.Parameter, nn.Buffer if hasattr(nn, "Buffer") else torch.Tensor):
                raise MVCError(f"parameter '{entry.name}' is quantized ({type(tensor).__name__}); "
                               f"the repository holds it as {entry.dtype}",
                               hint="load the model unquantized to move it between commits")
            expected = DTYPES.get(entry.dtype)
            if expected is None or tensor.dtype != expected:
                raise MVCError(f"parameter '{entry.name}' is {tensor.dtype} in memory but {entry.dtype} in the repository",
                               hint=f"load the model with torch_dtype={expected} so commits stay bit-exact")
            if tuple(tensor.shape) != tuple(entry.shape):
                raise MVCError(f"parameter '{entry.name}' has shape {list(tensor.shape)} in memory "
                               f"but {list(entry.shape)} in the repository")

    def copy_in(self, source: Mapping[str, torch.Tensor]) -> None:
        """Copies each tensor onto the parameter's own device and dtype (``.data.copy_``: no
        autograd record, no version bump), bit for bit."""
        with torch.no_grad():
            for name, value in source.items():
                self.tensors[name].data.copy_(value)
