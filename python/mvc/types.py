"""Small typed values returned by the client (as huggingface_hub's ``CommitInfo``), never raw
dicts: a schema change of mvc's JSON then fails here, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TensorChange:
    """One tensor a commit changed (``changes`` of ``mvc.log/1``)."""

    tensor: str
    storage: str
    rank: Optional[int]
    frobenius_norm: Optional[float]
    relative_norm: Optional[float]
    stored_byte_count: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TensorChange":
        return cls(d["tensor"], d["storage"], d.get("rank"), d.get("frobenius_norm"), d.get("relative_norm"),
                   int(d["stored_byte_count"]))


@dataclass(frozen=True)
class CommitInfo:
    """A commit as ``mvc log --json`` describes it."""

    id: str
    parents: list[str]
    summary: str
    message: str
    method: Optional[str]
    date: str
    refs: list[str]
    changes: list[TensorChange] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CommitInfo":
        return cls(d["id"], list(d["parents"]), d["summary"], d["message"], d.get("method"), d["date"],
                   list(d.get("refs", [])), [TensorChange.from_json(c) for c in d.get("changes", [])])

    @property
    def stored_byte_count(self) -> int:
        """Bytes of tensor data this commit stored (factors, residuals, full states)."""
        return sum(c.stored_byte_count for c in self.changes)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a commit (``mvc.ls-tensors/1``)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    hash: str
    file: str


@dataclass(frozen=True)
class CommitFactorsResult:
    """What ``Repo.commit_factors`` stored."""

    commit: CommitInfo
    rounded_from_float64: list[str]
    notes: list[str]


@dataclass(frozen=True)
class BisectResult:
    """The outcome of ``Repo.bisect``: the first bad commit, or the candidates left when only
    skipped commits remain. The bisection stays recorded until ``Repo.bisect_reset()``."""

    culprit: Optional[CommitInfo]
    candidates: list[str]
    tested: list[tuple[str, Optional[bool]]]


@dataclass(frozen=True)
class AccumulatorEdit:
    """One edit whose keys are in an accumulator (``edits`` of ``mvc.accumulator/1``)."""

    commit: str
    multiplicity: int
    key_count: int


@dataclass(frozen=True)
class Accumulator:
    """Σ KKᵀ of a tensor's recorded edit keys at a revision: AlphaEdit's ``cache_c``, ENCORE's
    ``SEQ_CACHE`` (``mvc accumulator``). ``matrix`` is d_in×d_in float64."""

    tensor: str
    revision: str
    matrix: Any
    edits: list[AccumulatorEdit]
    key_count: int
