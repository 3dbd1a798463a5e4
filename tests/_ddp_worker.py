"""Run by tests/test_scale.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

argv: WORKDIR. Trains the autoencoder with distributed data parallel twice with the same seed (a
seeded run must repeat), once killed after epoch 2 and resumed from its checkpoint, then runs
``scnapse run`` on a pipeline file through the CLI. Every rank saves what it got in
WORKDIR/rank<r>.npz for the test to compare with single-process training.
"""

import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

import scnapse as sn  # noqa: E402
from scnapse.train import distributed  # noqa: E402

work = Path(sys.argv[1])
sn.settings.verbosity = 30
assert distributed.init_distributed("cpu"), "expected WORLD_SIZE > 1"
rank = distributed.rank()
import anndata as ad  # noqa: E402

adata = ad.read_h5ad(work / "cells.h5ad")
OPTS = dict(max_epochs=3, seed=0, early_stopping=0, dropout=0.0, batch_size=32)


def train(**kw):
    model = sn.models.Autoencoder(4, variational=False, **OPTS).fit(adata, progress=False, **kw)
    return model, model.transform(adata)


m1, e1 = train()
m2, e2 = train()


class Killed(Exception):
    pass


def kill(report):
    if report.epoch == 2:
        raise Killed


try:
    train(checkpoint_dir=str(work / "ckpt"), callback=kill)
except Killed:
    pass
m3, e3 = train(checkpoint_dir=str(work / "ckpt"), resume=True)
weights = torch.cat([p.detach().flatten() for p in m1.module.parameters()]).numpy()
np.savez(work / f"rank{rank}.npz", emb=e1, emb_again=e2, emb_resumed=e3, weights=weights,
         train_loss=np.array(m1.history.train_loss), val_loss=np.array(m1.history.val_loss, dtype=float),
         resumed_from=m3.params["resumed_from_epoch"], world_size=m1.params["world_size"],
         checkpoint_files=len(list((work / "ckpt").iterdir())))
distributed.barrier()

from scnapse.cli import main  # noqa: E402

code = main(["run", str(work / "pipeline.yaml")])  # leaves the process group at the end
sys.exit(code)
