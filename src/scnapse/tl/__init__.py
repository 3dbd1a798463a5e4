"""scanpy-style steps: AnnData in, results written back into it."""

from ._autoencoder import autoencoder
from ._compare import compare_embeddings

__all__ = ["autoencoder", "compare_embeddings"]
