"""Pure PyTorch building blocks: no AnnData, no Qt."""

from .activations import ACTIVATIONS, get_activation
from .autoencoder import AutoencoderModule
from .classifier import ClassifierModule, expected_calibration_error, fit_temperature
from .cnn import CNNClassifierModule, ConvAutoencoderModule, ConvEncoder, augment_batch
from .layers import MLP
from .losses import COSTS, reconstruction_loss
from .rnn import ForecasterModule, SequenceAutoencoderModule, SequenceClassifierModule, SequenceEncoder

__all__ = [
    "ACTIVATIONS", "COSTS", "MLP", "AutoencoderModule", "CNNClassifierModule", "ClassifierModule",
    "ConvAutoencoderModule", "ConvEncoder", "ForecasterModule", "SequenceAutoencoderModule",
    "SequenceClassifierModule", "SequenceEncoder", "augment_batch", "expected_calibration_error",
    "fit_temperature", "get_activation", "reconstruction_loss",
]
