"""Training checkpoints: a killed run resumes where it stopped and ends with the same result.

A checkpoint is one file, ``checkpoint.pt`` in the checkpoint folder, replaced atomically every
``every`` epochs. It holds everything the next epoch depends on: the model's weights, the
optimizer's and the learning-rate scheduler's state (and the fp16 gradient scaler's), the random
number generators (the shuffling generator and, for every process, PyTorch's, NumPy's and
Python's — dropout and input noise draw from them), the epoch, the best weights and loss so far,
the early-stopping counter and the history. It is written with ``torch.save`` and read with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only — nothing
is unpickled.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "scnapse-checkpoint"
FORMAT_VERSION = 1
FILE = "checkpoint.pt"


def rng_state() -> dict:
    """This process's global random number generators, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


class Checkpoint:
    """Where and how often :func:`scnapse.train.fit` saves its state, and whether it resumes.

    Parameters
    ----------
    directory
        Folder of the checkpoint (created). Use one folder per training run.
    every
        Save after every ``every``-th epoch (and after the last one).
    resume
        Start from the checkpoint in ``directory`` if there is one (otherwise from scratch). The
        run must be the same one (same data, model and options; ``max_epochs`` may grow): a
        checkpoint of another run is refused with a ``ValueError``.
    """

    def __init__(self, directory: str | os.PathLike, *, every: int = 1, resume: bool = False):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"checkpoint_every={every!r} must be a positive integer (epochs between checkpoints).")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(
                f"checkpoint_dir={str(directory)!r} is an existing file, not a folder; give a folder "
                "(it is created if missing) for the checkpoints."
            )
        self.every = int(every)
        self.resume = bool(resume)
        self.restored_epoch = 0
        self.restored_reports: list[dict] = []

    @property
    def path(self) -> Path:
        return self.directory / FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def due(self, epoch: int, last: bool) -> bool:
        return last or epoch % self.every == 0

    def save(self, state: dict) -> Path:
        """Write ``state`` atomically (a temporary file renamed over the previous checkpoint)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".checkpoint.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is as readable as any file
        try:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return self.path

    def load(self, map_location: torch.device | str = "cpu") -> dict | None:
        """The saved state, or ``None`` when there is no checkpoint yet."""
        if not self.exists():
            return None
        try:
            state = torch.load(self.path, map_location=map_location, weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise ValueError(
                f"{str(self.path)!r} cannot be read as a scnapse checkpoint ({err}); delete it to start over."
            ) from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{str(self.path)!r} is not a scnapse checkpoint; delete it or choose another folder.")
        if int(state.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{str(self.path)!r} was written by a newer scnapse; upgrade to resume from it.")
        return state

    @staticmethod
    def fingerprint(module, train, val, config, precision: str, world: int) -> dict:
        """What must be the same for a checkpoint to belong to this run (``max_epochs`` and the
        device may change)."""
        cfg = {k: v for k, v in config.to_dict().items() if k not in ("max_epochs", "device")}
        return {
            "parameters": [list(p.shape) for p in module.parameters()],
            "n_train": len(train), "n_validation": len(val) if val is not None else 0,
            "config": cfg, "precision": precision, "world_size": world,
        }

    def restore(self, fingerprint: dict, objects: dict, *, generator, rank: int, device) -> dict | None:
        """Load the saved state into ``objects`` (``module``, ``optimizer``, ``scheduler``,
        ``scaler``: ``None`` where absent) and the random number generators; return the loop's
        progress (``epoch``, ``best_loss``, ``best_epoch``, ``waited``, ``best_state``,
        ``history``), or ``None`` when there is nothing to resume."""
        state = self.load(map_location=device) if self.resume else None
        if state is None:
            return None
        try:
            self.check_same_run(state["fingerprint"], fingerprint, self.path)
            for name, obj in objects.items():
                if obj is not None and state.get(name) is not None:
                    obj.load_state_dict(state[name])
            if generator is not None and state.get("shuffle_rng") is not None:
                generator.set_state(state["shuffle_rng"].cpu())
            set_rng_state(state["rng"][rank])
            progress = {k: state[k] for k in ("epoch", "best_loss", "best_epoch", "waited", "best_state", "history")}
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(
                f"{str(self.path)!r} is an incomplete scnapse checkpoint (missing {err}); delete it to start over."
            ) from None
        self.restored_epoch = int(progress["epoch"])
        self.restored_reports = [dict(r) for r in progress["history"]]
        return progress

    def save_state(self, objects: dict, progress: dict, *, fingerprint: dict, generator, rngs: list) -> Path:
        """Write ``objects``' states, the loop's ``progress`` and every process's RNGs."""
        return self.save({
            **{name: (obj.state_dict() if obj is not None else None) for name, obj in objects.items()},
            **progress, "fingerprint": fingerprint, "rng": rngs,
            "shuffle_rng": generator.get_state() if generator is not None else None,
        })

    @staticmethod
    def check_same_run(saved: dict, current: dict, path: Path) -> None:
        """Refuse to resume a different run: compare the fingerprints key by key."""
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in current.items() if saved.get(k) != v]
        if diffs:
            raise ValueError(
                f"The checkpoint in {str(path.parent)!r} belongs to another training run ("
                + "; ".join(diffs[:4]) + "). Use the same data and options, another checkpoint_dir, "
                "or resume=False to start over."
            )
