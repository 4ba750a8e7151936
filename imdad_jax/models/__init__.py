"""Pure flax.linen models: encoders, the hypersphere head, decoders. Imports nothing else of the project."""
from imdad_jax.models.decoder import Autoencoder, Classifier, DenseDecoder
from imdad_jax.models.detector import ARCHITECTURES, SphereDetector, build_detector, build_encoder, decoder_for
from imdad_jax.models.encoders import CNNEncoder, MLPEncoder, SqueezeExcite
from imdad_jax.models.head import MARGIN_PARAMS, HypersphereHead, SphereGeometry, margin2_from_param, sphere_geometry

__all__ = [
    "ARCHITECTURES", "Autoencoder", "Classifier", "DenseDecoder", "SphereDetector", "build_detector",
    "build_encoder", "decoder_for", "CNNEncoder", "MLPEncoder", "SqueezeExcite", "MARGIN_PARAMS", "HypersphereHead",
    "SphereGeometry", "margin2_from_param", "sphere_geometry",
]
