"""Writing results: never a half-written file, and no partial files left behind for long.

Every file is written to a hidden temporary file beside it (``.NAME.XXXXXXXX.tmp``, or
``.NAME.XXXXXXXX.tmp.EXT`` for plots) and renamed over the target at the end. A run that is
killed leaves its temporary file; the next write of the same target removes it (only files of
that exact pattern, beside that target, untouched for :data:`STALE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

#: a temporary file untouched this long is a leftover of a killed run (a live write keeps
#: touching its file), so the next write of the same target removes it
STALE_SECONDS = 60.0


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    import numpy as np

    with atomic_path(path) as tmp:
        # a memory-mapped array (crops_file=) is written as the plain array it views
        memmaps = {k: v for k, v in adata.obsm.items() if isinstance(v, np.memmap)}
        for k, v in memmaps.items():
            adata.obsm[k] = np.asarray(v)
        try:
            adata.write_h5ad(tmp)
        finally:
            for k, v in memmaps.items():
                adata.obsm[k] = v


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ""):
    """Yield a temporary path beside ``path`` (ending in ``.tmp`` + ``suffix``); when the block
    ends without an error it replaces ``path``, otherwise it is removed. Stale temporary files of
    earlier, killed writes of ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix=suffix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the output the usual permissions
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # again: some writers (safetensors) recreate the file as 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(path: str | os.PathLike, *, suffix: str = "", older_than: float | None = None) -> list:
    """Remove the temporary files an interrupted atomic write of ``path`` left beside it; returns
    the removed paths. Only scnapse's own pattern (``.NAME.`` + 8 random characters + ``.tmp`` +
    ``suffix``), only in ``path``'s folder, only files untouched for ``older_than`` seconds
    (default :data:`STALE_SECONDS`)."""
    path = Path(path)
    older_than = STALE_SECONDS if older_than is None else older_than
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp{re.escape(suffix)}")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                os.remove(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
    return removed
