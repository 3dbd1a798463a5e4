"""Where a pipeline writes, checked before anything runs.

:func:`planned_writes` lists every path a pipeline will write (the output, plots from ``save:``,
models from ``save_model:``, checkpoints, an image input's ``crops_file``); :func:`check_writes`
refuses, before the first step runs, to replace a file or folder scnapse did not write (unless
``overwrite``), to write outside a folder (``confine``), or to write where it cannot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .registry import PipelineError

#: step parameters that name a path the step writes, and what is written there
PATH_PARAMS = {"save": "plot", "save_model": "model", "checkpoint_dir": "checkpoints"}


def planned_writes(pipe, output: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Every ``(what, path)`` the pipeline will write, in the order it writes them.

    ``what`` is ``"crops"``, ``"plot"``, ``"model"``, ``"checkpoints"`` or ``"output"``; paths are
    as written in the pipeline (relative ones start from the working directory).
    """
    writes = []
    spec = pipe.input
    if isinstance(spec, dict) and spec.get("crops_file") is not None:
        crops = os.fspath(spec["crops_file"])
        writes.append(("crops", crops if crops.endswith(".npy") else crops + ".npy"))
    for step in pipe.steps:
        for key, what in PATH_PARAMS.items():
            value = step.params.get(key)
            if isinstance(value, (str, os.PathLike)) and os.fspath(value):
                writes.append((what, os.fspath(value)))
    out = output or pipe.output
    if out:
        writes.append(("output", os.fspath(out)))
    return writes


def confine_root(pipe, confine) -> Path | None:
    """The folder writes are confined to: ``True`` → the pipeline file's folder (the working
    directory for a pipeline not read from a file); a path → that folder; falsy → none."""
    if not confine:
        return None
    if confine is True:
        return Path(pipe.source).resolve().parent if pipe.source else Path.cwd().resolve()
    return Path(confine).resolve()


def check_writes(writes, *, overwrite: bool = False, confine: Path | None = None) -> None:
    """Refuse, with the path and the fix, any planned write that is not safe (see the module)."""
    for what, raw in writes:
        path = Path(raw)
        if confine is not None and not _inside(path.resolve(), confine):
            raise PipelineError(f"The pipeline would write its {what} to {raw!r}, outside {str(confine)!r}; "
                                "with --confine (confine=True) every path must lie in the pipeline file's "
                                "folder. Use a relative path without '..', or run without --confine.")
        if what == "output" and not overwrite and path.exists() and not is_scnapse_h5ad(path):
            raise PipelineError(f"The output {raw!r} exists and was not written by scnapse (it is not an .h5ad "
                                "with scnapse provenance); it is left as it is. Choose another output, or pass "
                                "--overwrite (overwrite=True) to replace it.")
        if what == "model" and not overwrite:
            _check_model_folder(path, raw)
        if what == "crops":
            _check_creatable(path, raw, what)


def is_scnapse_h5ad(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.h5ad`` written by scnapse (it has ``uns['scnapse']['pipeline']``);
    reads only the file's index, never its data."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "uns/scnapse/pipeline" in f
    except (OSError, ValueError):
        return False


def _check_model_folder(path: Path, raw: str) -> None:
    from ..models._base import CONFIG_FILE, FORMAT, WEIGHTS_FILE

    hint = "Choose another folder, or pass --overwrite (overwrite=True) to replace it."
    if path.exists() and not path.is_dir():
        raise PipelineError(f"save_model: {raw!r} is an existing file, not a model folder; it is left as it is. "
                            f"{hint}")
    cfg = path / CONFIG_FILE
    if not (cfg.exists() or (path / WEIGHTS_FILE).exists()):
        return
    try:
        ours = json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise PipelineError(f"save_model: the folder {raw!r} holds a {CONFIG_FILE} or {WEIGHTS_FILE} that is not "
                            f"a scnapse model (no '{FORMAT}' format tag); it is left as it is. {hint}")


def _check_creatable(path: Path, raw: str, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PipelineError(f"The {what} file {raw!r} is an existing folder; name a file.")
    if not parent.is_dir():
        raise PipelineError(f"The {what} file {raw!r} cannot be written: its folder {str(parent)!r} does not "
                            "exist. Create it, or choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PipelineError(f"The {what} file {raw!r} cannot be written: no write permission there. "
                            "Choose another path.")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
