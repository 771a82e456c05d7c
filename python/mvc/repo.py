"""``mvc.Repo``: version the edits of a loaded PyTorch model, move it between commits, bisect it.

Thin by design (GitPython's ``Repo`` over git): every repository operation is one ``mvc``
invocation, results are read from ``--json``; the only files read directly are the working
model (the working tree mvc just wrote and verified) and the safetensors files ``mvc
cat-tensors`` writes. No part of ``.mvc`` is parsed here.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._cli import Binary, MVCError
from ._model import Fingerprint, ModelTensors
from .types import Accumulator, AccumulatorEdit, BisectResult, CommitFactorsResult, CommitInfo, TensorEntry

PathLike = Union[str, "os.PathLike[str]"]
Factors = tuple[torch.Tensor, torch.Tensor]


@dataclass
class _Held:
    """The commit a loaded model holds, and its tensors' fingerprint when it was recorded."""

    commit: str
    fingerprint: Fingerprint


# model -> {repository root: what it holds}. Weak, so a model that is dropped is forgotten.
_HELD: "weakref.WeakKeyDictionary[nn.Module, dict[str, _Held]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Listing:
    commit: str
    tensors: dict[str, TensorEntry]
    working_model: str


def _conv1d_class() -> Optional[type]:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers is optional: without it no module is a Conv1D
        return None
    return Conv1D


def _facts_lines(facts: Any) -> bytes:
    if isinstance(facts, (bytes, str)):
        text = facts.decode() if isinstance(facts, bytes) else facts
        return (text if text.endswith("\n") else text + "\n").encode()
    items = facts if isinstance(facts, (list, tuple)) else [facts]
    return "".join(json.dumps(item, sort_keys=True, default=str) + "\n" for item in items).encode()


class Repo:
    """An mvc repository (the folder holding ``.mvc``) and the loaded models moved through it."""

    def __init__(self, path: PathLike, *, binary: Optional[PathLike] = None) -> None:
        self.root = Path(path).resolve()
        if not (self.root / ".mvc").is_dir():
            raise MVCError(f"'{path}' holds no mvc repository (.mvc)", hint="create one with mvc.Repo.init(path, model)")
        self._mvc = Binary(binary)
        self._listings: dict[str, _Listing] = {}

    # -- creation and reading -------------------------------------------------------------

    @classmethod
    def init(cls, path: PathLike, model: nn.Module, *, binary: Optional[PathLike] = None,
             message: str = "base model", max_shard_size: Union[int, str, None] = None) -> "Repo":
        """Saves ``model`` once as safetensors in ``path/model/`` and starts the history there.

        A transformers model is written by ``save_pretrained`` (config.json beside the weights,
        so the folder loads with ``from_pretrained``; ``max_shard_size`` shards it); any other
        module by ``safetensors.torch.save_model``. The model is recorded as holding the root
        commit, byte for byte.
        """
        root = Path(path)
        if (root / ".mvc").exists():
            raise MVCError(f"'{path}' already holds an mvc repository", hint="open it with mvc.Repo(path)")
        folder = root / "model"
        if folder.exists() and any(folder.iterdir()):
            raise MVCError(f"'{folder}' exists and is not empty", hint="give a new folder to mvc.Repo.init")
        folder.mkdir(parents=True, exist_ok=True)
        mvc = Binary(binary)
        if hasattr(model, "save_pretrained"):
            kwargs: dict[str, Any] = {}
            if max_shard_size is not None:
                kwargs["max_shard_size"] = max_shard_size
            model.save_pretrained(folder, **kwargs)
        else:
            from safetensors.torch import save_model
            save_model(model, str(folder / "model.safetensors"))
        single = folder / "model.safetensors"
        target = single if single.exists() else folder
        if not single.exists() and not (folder / "model.safetensors.index.json").exists():
            raise MVCError(f"saving the model wrote no safetensors file in '{folder}'")
        mvc.run(["init", str(target.relative_to(root)), "-m", message, "-q"], root)
        repo = cls(root, binary=mvc.path)
        listing = repo._listing("HEAD")
        repo._record(model, listing, ModelTensors(model, listing.tensors))
        return repo

    def head(self) -> CommitInfo:
        """The commit HEAD points at."""
        return self.log(max_count=1)[0]

    def log(self, rev: str = "HEAD", max_count: Optional[int] = None) -> list[CommitInfo]:
        """Commits reachable from ``rev``, newest first (``mvc log --json``)."""
        args = ["log", rev] + (["-n", str(max_count)] if max_count is not None else [])
        return [CommitInfo.from_json(c) for c in self._mvc.json(args, self.root)["commits"]]

    def show(self, rev: str) -> CommitInfo:
        return CommitInfo.from_json(self._mvc.json(["show", rev], self.root)["commit"])

    def tensors(self, rev: str = "HEAD") -> dict[str, TensorEntry]:
        """The tensors of ``rev`` by name: dtype, shape, content hash (``mvc ls-tensors``)."""
        return dict(self._listing(rev).tensors)

    def accumulator(self, name: str, rev: str = "HEAD") -> Accumulator:
        """Σ KKᵀ over the keys recorded by the edits present in ``rev``'s state for tensor
        ``name`` (``mvc accumulator``): AlphaEdit's ``cache_c`` / ENCORE's ``SEQ_CACHE`` of that
        history — a revert removes its edit's keys, a merge brings both sides'. ``matrix`` is a
        float64 torch tensor, d_in×d_in (0×0 when no edit recorded keys). An edit present that
        changed the tensor without keys raises ``MVCError`` naming it."""
        with tempfile.TemporaryDirectory(prefix="mvc-") as tmp_name:
            path = Path(tmp_name) / "accumulator.npy"
            document = self._mvc.json(["accumulator", name, rev, "-o", str(path)], self.root)
            matrix = torch.from_numpy(np.load(path))
        return Accumulator(name, document["revision"], matrix,
                           [AccumulatorEdit(e["commit"], int(e["multiplicity"]), int(e["key_count"]))
                            for e in document["edits"]], int(document["key_count"]))

    def held_commit(self, model: nn.Module) -> Optional[str]:
        """The commit this client recorded ``model`` as holding, or None."""
        held = _HELD.get(model, {}).get(str(self.root))
        return held.commit if held else None

    def attach(self, model: nn.Module, rev: str = "HEAD", verify: bool = True) -> None:
        """Records that ``model`` holds ``rev`` after comparing every tensor with it (one pass
        over the model): for a model loaded by ``from_pretrained`` rather than by this client.
        ``verify=False`` skips the comparison, for a model just loaded from the working model
        at ``rev``; a wrong claim then makes later checkouts wrong, so it is the caller's word."""
        listing = self._listing(rev)
        tensors = ModelTensors(model, listing.tensors)
        if not verify:
            self._record(model, listing, tensors)
            return
        with tempfile.TemporaryDirectory(prefix="mvc-") as tmp:
            stored = self._cat(listing.commit, list(listing.tensors), Path(tmp))
            differ = [n for n, t in stored.items() if not torch.equal(tensors.tensors[n].detach().cpu(), t)]
        if differ:
            raise MVCError(f"the model differs from {listing.commit[:12]} in {len(differ)} tensor(s), first '{differ[0]}'",
                           hint="commit the change with Repo.commit(model, message), or load that revision")
        self._record(model, listing, tensors)

    # -- commits ----------------------------------------------------------------------------

    def commit_factors(self, factors: Mapping[str, Factors], *, model: nn.Module, message: str,
                       method: str = "factors", facts: Any = None, hyperparameters: Optional[Mapping[str, Any]] = None,
                       keys: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                       covariance: Optional[torch.Tensor] = None) -> CommitFactorsResult:
        """Commits an editor's own factors as they are (no residual) and leaves memory, working
        model and repository equal bit for bit.

        ``factors`` maps a parameter name to ``(u, v)``: ROME's (left_vector, right_vector),
        MEMIT's (adj_k, resid), input side first, shapes ``(d_in[, r])`` and ``(d_out[, r])``.
        The owning module's class says how they map onto the stored weight: ``nn.Linear``
        (weight out×in) ΔW = v·uᵀ, transformers' ``Conv1D`` (weight in×out) ΔW = u·vᵀ; any other
        module, or a shape that does not fit, is refused with the expected shapes. Factors are
        stored as Float32; float64 factors are rounded and the result's ``notes`` say so.

        The in-memory weight must equal HEAD's (the edit not applied yet) or HEAD + the update
        within the editor's rounding (applied); anything else is refused, since the commit would
        not describe the model. Afterwards the weight holds exactly the committed bytes.
        ``keys`` (n×d_in) with ``values`` (n×d_out) and ``covariance`` (d_in×d_in) make the
        commit scorable by ``mvc score``; ``keys`` alone (one tensor) put the edit into the
        accumulator of AlphaEdit and ENCORE (``accumulator``, ``mvc edit --method alphaedit``); ``facts`` (a dict, a list of them, or JSON lines) and
        ``hyperparameters`` are recorded verbatim.
        """
        if not factors:
            raise MVCError("commit_factors got no factors")
        listing = self._listing("HEAD")
        tensors = ModelTensors(model, listing.tensors)
        held = _HELD.get(model, {}).get(str(self.root))
        conv1d = _conv1d_class()
        storage: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        notes: list[str] = []
        for given, (u, v) in factors.items():
            name = tensors.resolve(given)
            if name in storage:
                raise MVCError(f"'{given}' and another name are the same tied tensor '{name}'; give it once")
            entry = listing.tensors[name]
            tensors.check_writable([entry])
            module_path, _, leaf = given.rpartition(".")
            try:
                module = model.get_submodule(module_path)
            except AttributeError:
                raise MVCError(f"'{given}': the model has no module '{module_path}'") from None
            u2, v2 = (u.detach().unsqueeze(-1) if u.dim() == 1 else u.detach(),
                      v.detach().unsqueeze(-1) if v.dim() == 1 else v.detach())
            if isinstance(module, nn.Linear) and leaf == "weight":
                d_in, d_out, kind = module.in_features, module.out_features, "nn.Linear (weight out×in, ΔW = v·uᵀ)"
                up, vp = v2, u2  # storage rows are outputs: U = v, V = u
            elif conv1d is not None and isinstance(module, conv1d) and leaf == "weight":
                d_in, d_out = module.weight.shape[0], module.weight.shape[1]
                kind = "Conv1D (weight in×out, ΔW = u·vᵀ)"
                up, vp = u2, v2
            else:
                raise MVCError(f"'{given}' belongs to a {type(module).__name__}: commit_factors maps factors onto "
                               f"the weight of nn.Linear or transformers' Conv1D only",
                               hint="commit other changes with Repo.commit(model, message)")
            if u2.dim() != 2 or v2.dim() != 2 or u2.shape[0] != d_in or v2.shape[0] != d_out or u2.shape[1] != v2.shape[1]:
                raise MVCError(f"factors of '{given}', a {kind}, must be u ({d_in}[, r]) and v ({d_out}[, r]); "
                               f"got u {tuple(u.shape)} and v {tuple(v.shape)}")
            for which, f in (("u", u2), ("v", v2)):
                if not f.is_floating_point():
                    raise MVCError(f"factor {which} of '{given}' is {f.dtype}, not a float tensor")
            if up.dtype == torch.float64 or vp.dtype == torch.float64:
                notes.append(f"factors of '{name}' are float64 and are stored rounded to float32")
            as_stored = (lambda t: t.cpu().contiguous() if t.dtype in (torch.float32, torch.float64)
                         else t.cpu().float().contiguous())
            storage[name] = (as_stored(up), as_stored(vp))

        with tempfile.TemporaryDirectory(prefix="mvc-") as tmp_name:
            tmp = Path(tmp_name)
            # HEAD's bytes from the working model: 'mvc commit-factors' refuses below unless the
            # working model is clean, i.e. holds exactly HEAD, so a check against a dirty file
            # never lets a commit through.
            head_bytes = self._read_working(listing, list(storage))
            for name, (up, vp) in storage.items():
                self._check_matches_head(name, tensors.tensors[name], head_bytes[name], up, vp)
            factor_file = tmp / "factors.safetensors"
            save_file({f"{n}.{w}": t for n, (up, vp) in storage.items() for w, t in (("u", up), ("v", vp))},
                      str(factor_file))
            args = ["commit-factors", str(factor_file), "-m", message, "--method", method]
            if facts is not None:
                (tmp / "facts.jsonl").write_bytes(_facts_lines(facts))
                args += ["--facts", str(tmp / "facts.jsonl")]
            if hyperparameters is not None:
                (tmp / "hparams.json").write_text(json.dumps(dict(hyperparameters), sort_keys=True, default=str))
                args += ["--hyperparameters", str(tmp / "hparams.json")]
            for option, array in (("--keys", keys), ("--values", values), ("--cov", covariance)):
                if array is not None:
                    path = tmp / f"{option[2:]}.npy"
                    np.save(path, array.detach().cpu().double().numpy() if isinstance(array, torch.Tensor)
                            else np.asarray(array, dtype=np.float64))
                    args += [option, str(path)]
            document = self._mvc.json(args, self.root)
        commit = CommitInfo.from_json(document["commit"])
        # The working model now holds the committed bytes (mvc rewrote and verified them); the
        # commit keeps HEAD's layout, so the parent's listing says which file holds each tensor.
        tensors.copy_in(self._read_working(listing, list(storage)))
        self._advance(model, held, listing.commit, commit.id, tensors, set(storage))
        return CommitFactorsResult(commit, list(document.get("rounded_from_f64", [])), notes)

    def commit(self, model: nn.Module, message: str, changed: Optional[Iterable[str]] = None, *,
               compact: bool = False) -> CommitInfo:
        """Writes the changed parameters into the working model (in place) and commits them
        (``mvc commit``: rank found, exact residual stored; ``compact`` is ``--compact``: a longer
        search for the smallest residual).

        ``changed`` names the parameters the caller changed (e.g. the keys of EasyEdit's
        ``weights_copy``). Without it every tensor is compared with HEAD, which costs one pass
        over the model and HEAD's bytes in a temporary file.
        """
        listing = self._listing("HEAD")
        tensors = ModelTensors(model, listing.tensors)
        held = _HELD.get(model, {}).get(str(self.root))
        status = self._mvc.json(["status"], self.root)
        if not status["clean"]:
            names = [t["name"] for t in status["tensors"]]
            raise MVCError(f"the working model has uncommitted changes ({', '.join(names[:3])})",
                           hint="commit or discard them with mvc first ('mvc checkout --force HEAD')")
        with tempfile.TemporaryDirectory(prefix="mvc-") as tmp_name:
            if changed is None:
                head_bytes = self._cat(listing.commit, list(listing.tensors), Path(tmp_name))
                names = [n for n, t in head_bytes.items() if not torch.equal(tensors.tensors[n].detach().cpu(), t)]
            else:
                names = list(dict.fromkeys(tensors.resolve(n) for n in changed))
                head_bytes = self._cat(listing.commit, names, Path(tmp_name))
            if not names:
                raise MVCError("nothing to commit: the model equals HEAD in every tensor")
            tensors.check_writable(listing.tensors[n] for n in names)
            new = {n: tensors.tensors[n].detach().cpu().contiguous() for n in names}
            self._write_working(listing, new)
            try:
                self._mvc.run(["commit", "-m", message, "-q"] + (["--compact"] if compact else []), self.root)
            except BaseException:
                self._write_working(listing, {n: head_bytes[n] for n in names})
                raise
        commit = self.head()
        self._advance(model, held, listing.commit, commit.id, tensors, set(names))
        return commit

    # -- moving a loaded model ----------------------------------------------------------------

    def checkout(self, rev: str, model: nn.Module, force: bool = False) -> str:
        """Moves HEAD, the working model and the loaded ``model`` to ``rev``, copying into memory
        only the tensors whose content differs, bit-exact, on each parameter's device and dtype.

        Refused (nothing changes) when the model's parameters changed since the client recorded
        its commit, or no commit is recorded; ``force=True`` then also copies every changed
        tensor (all of them when nothing is recorded). A dtype other than the stored one, meta
        (offloaded) or quantized parameters are refused by name. Returns the commit id.
        """
        target = self._listing(rev)
        tensors = ModelTensors(model, target.tensors)
        copy = self._plan_move(model, tensors, target, force)
        tensors.check_writable(target.tensors[n] for n in copy)
        self._mvc.run(["checkout", rev, "-q"], self.root)
        tensors.copy_in(self._read_working(target, sorted(copy)))
        self._record(model, target, tensors)
        return target.commit

    def bisect(self, model: nn.Module, bad: str = "HEAD", good: Union[str, Sequence[str]] = (),
               is_good: Optional[Callable[[nn.Module], Optional[bool]]] = None) -> BisectResult:
        """Finds the first bad commit with the model kept loaded.

        mvc chooses every commit to test (``mvc bisect start --no-checkout`` / ``good|bad|skip
        --json``); neither HEAD nor the working model moves; each step copies into memory only
        the tensors that differ. ``is_good(model)`` returns True, False or None (skip). On
        return, and when ``is_good`` raises, the model is back in the state it started in; the
        bisection stays recorded until ``bisect_reset()``, and calling ``bisect`` again resumes.
        """
        if is_good is None:
            raise MVCError("bisect needs is_good(model) -> True, False or None")
        goods = [good] if isinstance(good, str) else list(good)
        held = _HELD.get(model, {}).get(str(self.root))
        if held is None:
            raise MVCError("the model holds no commit this client recorded", hint="call repo.attach(model) first")
        start = self._listing(held.commit)
        tensors = ModelTensors(model, start.tensors)
        dirty = tensors.changed_since(held.fingerprint)
        if dirty:
            raise MVCError(f"the model changed since it was recorded at {held.commit[:12]} ({', '.join(dirty[:3])})",
                           hint="commit it with repo.commit(model, message) before bisecting")
        step = self._bisect_resume(bad, goods)
        if step is None:
            step = self._mvc.json(["bisect", "start", "--no-checkout", bad, *goods], self.root)
        current, stray, tested = start, set(), []
        try:
            while step["status"] == "testing":
                target = self._listing(step["commit"])
                self._move_loaded(tensors, current, target, stray)
                current, stray = target, set()
                before = tensors.fingerprint()
                verdict = is_good(model)
                # An is_good that writes into the model is undone by the next move.
                stray = set(tensors.changed_since(before))
                term = {True: "good", False: "bad", None: "skip"}.get(verdict)
                if term is None:
                    raise MVCError(f"is_good returned {verdict!r}; it must return True, False or None")
                tested.append((target.commit, verdict))
                step = self._mvc.json(["bisect", term, target.commit], self.root)
        finally:
            self._move_loaded(tensors, current, start, stray)
            self._record(model, start, tensors)
        if step["status"] == "first_bad":
            return BisectResult(self.show(step["commit"]), [step["commit"]], tested)
        if step["status"] == "only_skipped_left":
            return BisectResult(None, list(step["candidates"]), tested)
        raise MVCError(f"bisection is waiting for {'a bad' if step['need_bad'] else 'a good'} commit",
                       hint="give bad= and good= revisions")

    def bisect_probes(self, jobs: int, pending: Sequence[str] = ()) -> dict[str, Any]:
        """The commits to test at once in the running bisection (``mvc bisect next --jobs K
        --json``, schema ``mvc.bisect-probes/1``): up to ``jobs`` commits that, with the
        ``pending`` ones (already under test elsewhere), split the candidates into near-equal
        parts, chosen by the same code as ``mvc bisect run --jobs``; with ``jobs=1`` and nothing
        pending, git's choice, the one ``bisect`` tests. Nothing moves. For a driver that farms
        evaluations out itself; record each answer with ``mvc bisect good|bad|skip REV``.
        """
        return self._mvc.json(["bisect", "next", "--jobs", str(jobs),
                               *(arg for rev in pending for arg in ("--pending", rev))], self.root)

    def bisect_reset(self) -> None:
        """Ends the bisection (``mvc bisect reset``); HEAD and the working model never moved."""
        self._mvc.run(["bisect", "reset", "-q"], self.root)

    # -- internals ------------------------------------------------------------------------------

    def _listing(self, rev: str) -> _Listing:
        """``mvc ls-tensors REV --json``, cached by commit id (a commit never changes)."""
        if len(rev) == 40 and rev in self._listings:
            return self._listings[rev]
        document = self._mvc.json(["ls-tensors", rev], self.root)
        listing = _Listing(
            document["commit"],
            {t["name"]: TensorEntry(t["name"], t["dtype"], tuple(t["shape"]), t["hash"], t["file"])
             for t in document["tensors"]},
            document["working_model"])
        self._listings[listing.commit] = listing
        return listing

    def _record(self, model: nn.Module, listing: Union[_Listing, str], tensors: ModelTensors) -> None:
        commit = listing if isinstance(listing, str) else listing.commit
        _HELD.setdefault(model, {})[str(self.root)] = _Held(commit, tensors.fingerprint())

    def _advance(self, model: nn.Module, held: Optional[_Held], parent: str, new: str,
                 tensors: ModelTensors, touched: set[str]) -> None:
        """After a commit: the model holds the new commit if it held the parent and nothing but
        the committed tensors changed since; otherwise what it holds is unknown."""
        if held is not None and held.commit == parent and set(tensors.changed_since(held.fingerprint)) <= touched:
            self._record(model, new, tensors)
        else:
            _HELD.get(model, {}).pop(str(self.root), None)

    def _plan_move(self, model: nn.Module, tensors: ModelTensors, target: _Listing, force: bool) -> set[str]:
        held = _HELD.get(model, {}).get(str(self.root))
        if held is None:
            if not force:
                raise MVCError("the model holds no commit this client recorded",
                               hint="repo.attach(model) compares it with HEAD once; force=True copies every tensor")
            return set(target.tensors)
        dirty = tensors.changed_since(held.fingerprint)
        if dirty and not force:
            raise MVCError(f"the model's parameters changed since it was recorded at {held.commit[:12]}: "
                           f"{', '.join(dirty[:3])}{' ...' if len(dirty) > 3 else ''}",
                           hint="commit them with repo.commit(model, message), or pass force=True to overwrite them")
        source = self._listing(held.commit)
        return {n for n, e in target.tensors.items()
                if n not in source.tensors or source.tensors[n].hash != e.hash} | set(dirty)

    def _move_loaded(self, tensors: ModelTensors, source: _Listing, target: _Listing, extra: set[str]) -> None:
        """Copies into memory the tensors that differ between two commits, from ``mvc cat-tensors``."""
        names = sorted({n for n, e in target.tensors.items()
                        if n not in source.tensors or source.tensors[n].hash != e.hash} | extra)
        if not names:
            return
        tensors.check_writable(target.tensors[n] for n in names)
        with tempfile.TemporaryDirectory(prefix="mvc-") as tmp:
            tensors.copy_in(self._cat(target.commit, names, Path(tmp)))

    def _bisect_resume(self, bad: str, goods: list[str]) -> Optional[dict[str, Any]]:
        """The step of a bisection already in progress, or None when there is none."""
        try:
            log = self._mvc.json(["bisect", "log"], self.root)
        except MVCError as error:
            if "no bisection is in progress" in str(error):
                return None
            raise
        step = self._mvc.json(["bisect", "next"], self.root)
        if not step["no_checkout"]:
            raise MVCError("a bisection that checks out the working model is in progress",
                           hint="finish it with 'mvc bisect good|bad', or end it with repo.bisect_reset()")
        # Marks move refs/bisect/bad as steps go; the start line keeps what the caller asked.
        started = next((line.split()[4:] for line in log["lines"] if line.startswith("mvc bisect start")), [])
        wanted = [self._listing(bad).commit, *(self._listing(g).commit for g in goods)]
        if started[:1] != wanted[:1] or not set(wanted[1:]) <= set(started[1:]):
            raise MVCError(f"a bisection between other commits is in progress (started {' '.join(s[:12] for s in started)})",
                           hint="resume it with the same bad= and good=, or end it with repo.bisect_reset()")
        return step

    @staticmethod
    def _check_matches_head(name: str, live: torch.Tensor, head: torch.Tensor, up: torch.Tensor,
                            vp: torch.Tensor) -> None:
        """Refuses unless memory holds HEAD's tensor, or HEAD + U·Vᵀ within the editor's rounding:
        per element at most 2 ulps of |HEAD| + Σ|U||V|, which covers an update computed in the
        parameter's dtype or in Float32 and rounded. The arithmetic runs in Float32 for 16-bit
        parameters (its error is 2¹⁶ times below their ulp) and in Float64 otherwise, by row
        blocks with in-place operations, so a 2048×7168 weight costs well under a second."""
        memory = live.detach().cpu()
        if torch.equal(memory, head):
            return
        eps, tiny = torch.finfo(memory.dtype).eps, torch.finfo(memory.dtype).tiny
        work = torch.float32 if memory.element_size() <= 2 else torch.float64
        rows = head.shape[0]
        h2, m2 = head.reshape(rows, -1), memory.reshape(rows, -1)
        u, v = up.to(work), vp.to(work)
        u_abs, v_abs_t = u.abs(), v.abs().T.contiguous()
        v_t = v.T.contiguous()
        worst, beyond = 0.0, 0
        for start in range(0, rows, 1024):
            block = slice(start, min(rows, start + 1024))
            h = h2[block].to(work)
            deviation = m2[block].to(work).sub_(h).sub_(u[block] @ v_t).abs_()
            tolerance = h.abs_().add_(u_abs[block] @ v_abs_t).mul_(2 * eps).add_(tiny)
            over = deviation > tolerance
            beyond += int(over.sum())
            worst = max(worst, float(deviation.max()))
        if beyond:
            raise MVCError(f"in-memory '{name}' is neither HEAD's tensor nor HEAD + the factors' update "
                           f"({beyond} elements beyond the editor's rounding, largest deviation {worst:.3g})",
                           hint="the model holds other changes: commit them with repo.commit(model, message), "
                                "or give the factors of the edit that was applied")

    def _cat(self, commit: str, names: list[str], folder: Path) -> dict[str, torch.Tensor]:
        """The exact tensors of a commit, rebuilt by ``mvc cat-tensors`` (CPU)."""
        if not names:
            return {}
        path = folder / f"cat-{commit[:12]}.safetensors"
        self._mvc.run(["cat-tensors", commit, *names, "-o", str(path), "-q"], self.root)
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {n: f.get_tensor(n) for n in names}

    def _working_file(self, listing: _Listing, entry: TensorEntry) -> Path:
        model = self.root / listing.working_model
        return model if model.is_file() else model / entry.file

    def _read_working(self, listing: _Listing, names: list[str]) -> dict[str, torch.Tensor]:
        """Tensors of the working model, which mvc has just rewritten to ``listing``'s commit and
        verified against its hashes."""
        out: dict[str, torch.Tensor] = {}
        by_file: dict[Path, list[str]] = {}
        for n in names:
            by_file.setdefault(self._working_file(listing, listing.tensors[n]), []).append(n)
        for path, group in by_file.items():
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for n in group:
                    out[n] = f.get_tensor(n)
        return out

    def _write_working(self, listing: _Listing, new: Mapping[str, torch.Tensor]) -> None:
        """Writes tensors into the working model in place, at the offsets its header gives (the
        way any editor rewrites the model for ``mvc commit`` to find by hash)."""
        by_file: dict[Path, list[str]] = {}
        for n in new:
            by_file.setdefault(self._working_file(listing, listing.tensors[n]), []).append(n)
        for path, group in by_file.items():
            with open(path, "r+b") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
                for n in group:
                    begin, end = header[n]["data_offsets"]
                    data = new[n].contiguous().view(torch.uint8).numpy().tobytes()
                    if len(data) != end - begin:
                        raise MVCError(f"tensor '{n}' has {len(data)} bytes in memory but {end - begin} in '{path}'")
                    f.seek(8 + length + begin)
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())

