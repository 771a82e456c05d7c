"""mvc: version knowledge edits of a loaded PyTorch model with the ``mvc`` binary.

    import mvc
    repo = mvc.Repo.init("work", model)
    repo.commit_factors({"transformer.h.5.mlp.c_proj.weight": (u, v)}, model=model, message="...")
    repo.checkout("HEAD~1", model)
"""

from ._cli import MVCError, find_binary
from .repo import Repo
from .types import Accumulator, AccumulatorEdit, BisectResult, CommitFactorsResult, CommitInfo, TensorChange, TensorEntry

__all__ = ["Repo", "MVCError", "find_binary", "CommitInfo", "TensorChange", "TensorEntry", "CommitFactorsResult",
           "BisectResult", "Accumulator", "AccumulatorEdit"]
__version__ = "0.1.0"
