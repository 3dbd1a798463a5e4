"""scanpy-style steps: AnnData in, results written back into it (training steps return a model)."""

from ._autoencoder import autoencoder
from ._classifier import annotate, train_classifier
from ._compare import compare_embeddings
from ._compare_runs import compare_runs
from ._integration import integration_metrics
from ._image import annotate_images, image_embedding, train_image_classifier
from ._map_query import map_query
from ._sequence import annotate_sequences, forecast, sequence_embedding, train_forecaster, train_sequence_classifier
from ._tune import tune

__all__ = [
    "annotate", "annotate_images", "annotate_sequences", "autoencoder", "compare_embeddings", "compare_runs",
    "forecast", "image_embedding", "integration_metrics", "map_query", "sequence_embedding", "train_classifier",
    "train_forecaster", "train_image_classifier",
    "train_sequence_classifier", "tune",
]
