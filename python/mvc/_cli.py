"""Runs the ``mvc`` binary, the only way this package touches a repository (like GitPython's
``Git`` over git): every call is one process with ``--json`` where a result is read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence


class MVCError(Exception):
    """A failed ``mvc`` call, or a refusal of the client before any call.

    Carries the command, the exit status and mvc's ``fatal:``/``hint:`` lines, so a caller can
    show what git-style tools show (GitPython's ``GitCommandError``).
    """

    def __init__(self, message: str, *, command: Sequence[str] = (), status: Optional[int] = None,
                 stderr: str = "", hint: Optional[str] = None) -> None:
        self.command = list(command)
        self.status = status
        self.stderr = stderr
        self.hint = hint
        text = message if hint is None else f"{message}\nhint: {hint}"
        super().__init__(text)


def find_binary(explicit: Optional[str | os.PathLike[str]] = None) -> str:
    """The ``mvc`` executable: the argument, else ``$MVC_BINARY``, else the one on ``PATH``.

    Raises MVCError naming what was tried, so a missing install is not a bare FileNotFoundError.
    """
    for candidate in (explicit, os.environ.get("MVC_BINARY")):
        if candidate:
            path = Path(candidate)
            if path.is_file() and os.access(path, os.X_OK):
                return str(path.resolve())
            raise MVCError(f"mvc binary '{candidate}' is not an executable file",
                           hint="build it with 'swift build -c release --product mvc' or run scripts/install.sh")
    found = shutil.which("mvc")
    if found:
        return found
    raise MVCError("no mvc binary: not given, MVC_BINARY unset, and none on PATH",
                   hint="run scripts/install.sh, or set MVC_BINARY=/path/to/mvc")


class Binary:
    """One ``mvc`` executable, run in one repository folder."""

    def __init__(self, binary: Optional[str | os.PathLike[str]] = None) -> None:
        self.path = find_binary(binary)

    def run(self, args: Sequence[str], cwd: str | os.PathLike[str]) -> str:
        """Runs ``mvc ARGS`` in ``cwd`` and returns stdout; raises MVCError on a non-zero exit."""
        command = [self.path, *args]
        env = dict(os.environ)
        env.setdefault("MVC_NO_PROGRESS", "1")
        proc = subprocess.run(command, cwd=os.fspath(cwd), capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            fatal = [line[len("fatal: "):] for line in proc.stderr.splitlines() if line.startswith("fatal: ")]
            hints = [line[len("hint: "):] for line in proc.stderr.splitlines() if line.startswith("hint: ")]
            message = "; ".join(fatal) or proc.stderr.strip() or f"exit status {proc.returncode}"
            raise MVCError(f"mvc {' '.join(args[:2])}: {message}", command=command, status=proc.returncode,
                           stderr=proc.stderr, hint="; ".join(hints) or None)
        return proc.stdout

    def json(self, args: Sequence[str], cwd: str | os.PathLike[str]) -> Any:
        """Runs ``mvc ARGS --json`` and parses its one JSON document."""
        out = self.run([*args, "--json"], cwd)
        try:
            return json.loads(out)
        except json.JSONDecodeError as error:
            raise MVCError(f"mvc {' '.join(args[:2])} --json printed no JSON document: {error}",
                           command=[self.path, *args]) from error
