"""Scale: shuffled-chunk reads of backed (h5ad, zarr) matrices, checkpoints and resume,
mixed precision, and distributed data parallel training under torchrun (2 gloo processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
import yaml
from scipy import sparse

import scnapse as sn
from scnapse.train import Checkpoint, Loader, Matrix
from scnapse.train.data import DEFAULT_CHUNK_ROWS

from conftest import make_counts

OPTS = dict(max_epochs=3, seed=0, early_stopping=0, dropout=0.0, batch_size=32)


# -- shuffled chunks ------------------------------------------------------------------------------
def _orders(loader):
    return [b["i"].long().tolist() for b in loader]


def test_chunked_shuffle_visits_every_row_once_in_contiguous_blocks():
    idx = np.arange(0, 300, 2)  # 150 training rows with gaps, as after a split
    fields = {"i": torch.arange(300, dtype=torch.float32)}
    loader = Loader(fields, idx, 16, shuffle=True, generator=torch.Generator().manual_seed(0), chunk_size=40)
    assert loader.chunk_rows == 40
    batches = _orders(loader)
    assert sorted(sum(batches, [])) == idx.tolist()
    blocks = [set(idx[s : s + 40].tolist()) for s in range(0, 150, 40)]
    for b in batches:  # a batch never spans two blocks
        assert sum(set(b) <= blk for blk in blocks) == 1
    first_block_of = [next(k for k, blk in enumerate(blocks) if b[0] in blk) for b in batches]
    assert first_block_of != sorted(first_block_of) or len(set(first_block_of)) == 1
    assert _orders(loader) != batches  # a new order every pass


def test_single_chunk_is_the_full_shuffle():
    fields = {"i": torch.arange(100, dtype=torch.float32)}
    a = Loader(fields, np.arange(100), 16, shuffle=True, generator=torch.Generator().manual_seed(3))
    b = Loader(fields, np.arange(100), 16, shuffle=True, generator=torch.Generator().manual_seed(3), chunk_size=500)
    assert _orders(a) == _orders(b)
    with pytest.raises(ValueError, match="chunk_size"):
        Loader(fields, np.arange(100), 16, chunk_size=-1)


def test_backed_loader_reads_chunks_and_matches_in_memory(tmp_path):
    X = sparse.random(500, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    ad.AnnData(X).write_h5ad(tmp_path / "m.h5ad")
    backed = ad.read_h5ad(tmp_path / "m.h5ad", backed="r")
    idx = np.arange(3, 480)
    lb = Loader({"x": Matrix(backed.X)}, idx, 32, shuffle=True, generator=torch.Generator().manual_seed(1),
                chunk_size=100)
    lm = Loader({"x": Matrix(X)}, idx, 32, shuffle=True, generator=torch.Generator().manual_seed(1),
                chunk_size=100)
    assert Loader({"x": Matrix(backed.X)}, idx, 32).chunk_rows == DEFAULT_CHUNK_ROWS  # backed: chunks by default
    assert Loader({"x": Matrix(X)}, idx, 32).chunk_rows is None  # in memory: a full shuffle
    for bb, bm in zip(lb, lm, strict=True):
        assert torch.equal(bb["x"], bm["x"])
    backed.file.close()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["h5ad", "zarr"])
def test_backed_chunks_give_the_in_memory_embedding(tmp_path, store):
    adata = make_counts(150, 20)
    path = tmp_path / f"cells.{store}"
    adata.write_h5ad(path) if store == "h5ad" else adata.write_zarr(path)
    backed = sn.read_backed(path)
    m_b = sn.models.Autoencoder(4, **OPTS).fit(backed, progress=False, chunk_size=40)
    m_m = sn.models.Autoencoder(4, **OPTS).fit(adata, progress=False, chunk_size=40)
    assert m_b.params["matrix"] == "backed" and m_b.params["chunk_rows"] == 40
    np.testing.assert_allclose(m_b.transform(backed), m_m.transform(adata), rtol=1e-4, atol=1e-5)
    if store == "h5ad":
        backed.file.close()


def test_read_backed_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        sn.read_backed(tmp_path / "missing.h5ad")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="zarr"):
        sn.read_backed(tmp_path / "x.csv")


# -- checkpoints ----------------------------------------------------------------------------------
class Killed(Exception):
    pass


def _kill_at(epoch):
    def cb(report):
        if report.epoch == epoch:
            raise Killed

    return cb


# (pca_init=False in the second set: from PCA's start, early stopping would end training before the kill)
@pytest.mark.parametrize("options", [{}, {"dropout": 0.2, "lr_schedule": "plateau", "early_stopping": 2,
                                         "pca_init": False}])
def test_resume_equals_uninterrupted(tmp_path, options):
    adata = make_counts(100, 16)
    opts = {**OPTS, "max_epochs": 4, **options}
    ref = sn.models.Autoencoder(3, **opts).fit(adata, progress=False)
    with pytest.raises(Killed):
        sn.models.Autoencoder(3, **opts).fit(adata, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2,
                                             callback=_kill_at(3))
    assert (tmp_path / "checkpoint.pt").exists()
    resumed = sn.models.Autoencoder(3, **opts).fit(adata, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert resumed.params["resumed_from_epoch"] == 2  # every 2 epochs: the last save was after epoch 2
    assert resumed.history.train_loss == ref.history.train_loss
    assert resumed.history.stopped == ref.history.stopped
    np.testing.assert_array_equal(resumed.transform(adata), ref.transform(adata))
    # resuming a finished run changes nothing
    again = sn.models.Autoencoder(3, **opts).fit(adata, progress=False, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(again.transform(adata), ref.transform(adata))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    adata = make_counts(60, 16)
    sn.models.Autoencoder(3, **{**OPTS, "max_epochs": 1}).fit(adata, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another training run"):
        sn.models.Autoencoder(3, **{**OPTS, "max_epochs": 2, "lr": 0.01}).fit(
            adata, progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        sn.models.Autoencoder(3, **OPTS).fit(adata, progress=False, resume=True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Checkpoint(tmp_path, every=0)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it"):
        Checkpoint(tmp_path, resume=True).load()


def test_cli_checkpoint_dir_and_resume(tmp_path, monkeypatch):
    """`scnapse run --checkpoint-dir` saves; `--resume` with more epochs continues from the last
    checkpoint and ends where an uninterrupted run of that length ends."""
    from scnapse.cli import main

    monkeypatch.chdir(tmp_path)
    make_counts(80, 16).write_h5ad("cells.h5ad")
    steps = [{"step": "scnapse.tl.autoencoder", "id": "ae",
              "params": {"n_latent": 3, **OPTS, "max_epochs": 2, "checkpoint_every": 1}}]
    Path("p.yaml").write_text(yaml.safe_dump({"input": "cells.h5ad", "output": "out.h5ad", "device": "cpu",
                                              "steps": steps}))
    assert main(["run", "p.yaml", "--checkpoint-dir", "ckpt"]) == 0
    assert Path("ckpt/ae/checkpoint.pt").exists()
    assert main(["run", "p.yaml", "--checkpoint-dir", "ckpt", "--resume", "--output", "resumed.h5ad",
                 "--set", "steps.ae.max_epochs=3"]) == 0
    assert main(["run", "p.yaml", "--output", "full.h5ad", "--set", "steps.ae.max_epochs=3"]) == 0
    resumed, full = ad.read_h5ad("resumed.h5ad"), ad.read_h5ad("full.h5ad")
    assert resumed.uns["autoencoder"]["params"]["resumed_from_epoch"] == 2
    np.testing.assert_array_equal(resumed.obsm["X_autoencoder"], full.obsm["X_autoencoder"])
    with pytest.raises(SystemExit, match="checkpoint"):
        main(["run", "p.yaml", "--resume"])  # nothing saves checkpoints


# -- mixed precision ------------------------------------------------------------------------------
def test_bf16_within_tolerance_of_fp32():
    """Stated tolerance: bf16 autocast ends within 5 % of the fp32 validation loss."""
    adata = make_counts(160, 20)
    opts = {**OPTS, "max_epochs": 4}
    full = sn.models.Autoencoder(4, **opts).fit(adata, progress=False)
    half = sn.models.Autoencoder(4, **opts).fit(adata, progress=False, precision="bf16")
    assert half.params["precision"] == "bf16"
    a, b = full.history.val_loss[-1], half.history.val_loss[-1]
    assert abs(a - b) <= 0.05 * a, (a, b)
    with pytest.raises(ValueError, match="precision"):
        sn.models.Autoencoder(4, **opts).fit(adata, progress=False, precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="GPU"):
            sn.models.Autoencoder(4, **{**opts, "device": "cpu"}).fit(adata, progress=False, precision="fp16")


@pytest.mark.gpu
def test_gpu_backed_chunks_and_fp16(tmp_path):
    """On a GPU: backed chunks go through pinned memory; fp16 (with a gradient scaler) and bf16
    stay within 5 % of fp32's validation loss; the embedding equals the in-memory one."""
    adata = make_counts(400, 50)
    adata.write_h5ad(tmp_path / "c.h5ad")
    backed = sn.read_backed(tmp_path / "c.h5ad")
    opts = {**OPTS, "max_epochs": 6, "device": "auto"}
    ref = sn.models.Autoencoder(4, **opts).fit(adata, progress=False, chunk_size=128)
    b = sn.models.Autoencoder(4, **opts).fit(backed, progress=False, chunk_size=128)
    np.testing.assert_allclose(b.transform(backed), ref.transform(adata), rtol=1e-3, atol=1e-4)
    on_device = ref.transform(adata)  # in memory on a GPU: rows gathered on the device
    np.testing.assert_allclose(on_device, ref.to("cpu").transform(adata), rtol=1e-3, atol=1e-4)
    ref.to("auto")
    for precision in (["fp16", "bf16"] if torch.cuda.is_available() else ["bf16"]):
        m = sn.models.Autoencoder(4, **opts).fit(adata, progress=False, precision=precision)
        assert abs(m.history.val_loss[-1] - ref.history.val_loss[-1]) <= 0.05 * ref.history.val_loss[-1]
    backed.file.close()


# -- distributed data parallel ------------------------------------------------------------------
def test_shard_splits_every_global_batch():
    fields = {"i": torch.arange(50, dtype=torch.float32)}
    base = Loader(fields, np.arange(50), 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    views = [base.shard(r, 3) for r in range(3)]
    for v in views:
        v.generator = torch.Generator().manual_seed(0)
    per_rank = [[(b["i"].long().tolist(), v.last_weight.tolist(), v.last_global_rows) for b in v] for v in views]
    globals_ = _orders(Loader(fields, np.arange(50), 8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(len(p) == len(globals_) for p in per_rank)  # every rank runs every step
    for k, g in enumerate(globals_):
        got = sorted(sum((per_rank[r][k][0] for r in range(3) if per_rank[r][k][1] == [1.0] * len(per_rank[r][k][0])),
                         []))
        assert got == g and all(per_rank[r][k][2] == len(g) for r in range(3))
    tiny = Loader(fields, np.arange(2), 8).shard(2, 3)  # fewer rows than ranks: a repeated row, weight 0
    (batch,) = list(tiny)
    assert tiny.last_weight.tolist() == [0.0] and len(batch["i"]) == 1
    with pytest.raises(ValueError, match="rank"):
        base.shard(3, 3)


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    """torchrun --nproc_per_node 2 (gloo): the same global batches, so the same training as one
    process within 1e-4 (float summation order); a seeded run repeats exactly; a killed DDP run
    resumes to the same result; `scnapse run` under torchrun writes the output once (rank 0)."""
    adata = make_counts(160, 20)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    # variational=False: a VAE's sampling noise is drawn per rank, so only the plain model can match
    steps = [{"step": "scnapse.tl.autoencoder", "id": "ae", "params": {"n_latent": 4, "variational": False, **OPTS}}]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "input": str(tmp_path / "cells.h5ad"), "output": str(tmp_path / "out.h5ad"), "device": "cpu",
        "steps": steps}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).parent / "_ddp_worker.py"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    assert int(r0["world_size"]) == 2
    np.testing.assert_array_equal(r0["weights"], r1["weights"])  # the ranks agree
    np.testing.assert_array_equal(r0["val_loss"], r1["val_loss"])  # so do their early-stopping inputs
    np.testing.assert_array_equal(r0["emb"], r0["emb_again"])  # reproducible for the same world size
    assert int(r0["resumed_from"]) == 2 and int(r0["checkpoint_files"]) == 1  # rank 0 alone wrote it
    np.testing.assert_array_equal(r0["emb_resumed"], r0["emb"])

    single = sn.models.Autoencoder(4, variational=False, **OPTS).fit(adata, progress=False)
    assert single.params["world_size"] == 1
    np.testing.assert_allclose(r0["train_loss"], single.history.train_loss, rtol=1e-4)
    np.testing.assert_allclose(r0["emb"], single.transform(adata), rtol=1e-4, atol=1e-4)
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.uns["autoencoder"]["params"]["world_size"] == 2
    np.testing.assert_allclose(out.obsm["X_autoencoder"], r0["emb"], rtol=1e-4, atol=1e-4)
    assert not list(tmp_path.glob(".out.h5ad.*"))  # no half-written files left by other ranks


def test_backed_chunks_sharded_match_in_memory(tmp_path):
    """Each rank reads only its rows of a chunk; what it gets equals the in-memory shard."""
    X = sparse.random(300, 12, density=0.3, format="csr", dtype=np.float32, random_state=1)
    ad.AnnData(X).write_h5ad(tmp_path / "m.h5ad")
    backed = ad.read_h5ad(tmp_path / "m.h5ad", backed="r")
    for rank in range(2):
        got = []
        for mat in (Matrix(backed.X), Matrix(X)):
            loader = Loader({"x": mat}, np.arange(300), 25, shuffle=True, chunk_size=70,
                            generator=torch.Generator().manual_seed(5)).shard(rank, 2)
            got.append([b["x"] for b in loader])
        assert len(got[0]) == len(got[1]) > 4
        for a, b in zip(*got, strict=True):
            assert torch.equal(a, b)
    backed.file.close()
