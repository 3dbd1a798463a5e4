"""scanpy-style steps: AnnData in, results written back into it."""

from ._autoencoder import autoencoder
from ._compare import compare_embeddings
from ._classifier import annotate, train_classifier
from ._tune import tune
from ._image import annotate_images, image_embedding, train_image_classifier
from ._sequence import annotate_sequences, forecast, sequence_embedding, train_forecaster, train_sequence_classifier

__all__ = ["autoencoder", "compare_embeddings", "tune"]
__all__ += ["annotate_images", "image_embedding", "train_image_classifier"]
__all__ += ["annotate_sequences", "forecast", "sequence_embedding", "train_forecaster", "train_sequence_classifier"]
__all__ += ["annotate", "train_classifier"]
