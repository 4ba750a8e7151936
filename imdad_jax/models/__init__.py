"""Pure flax.linen models: encoders and the hypersphere head. Imports nothing else of the project."""
from imdad_jax.models.detector import ARCHITECTURES, SphereDetector, build_detector
from imdad_jax.models.encoders import CNNEncoder, MLPEncoder
from imdad_jax.models.head import MARGIN_PARAMS, HypersphereHead, SphereGeometry, margin2_from_param, sphere_geometry

__all__ = [
    "ARCHITECTURES", "SphereDetector", "build_detector", "CNNEncoder", "MLPEncoder", "MARGIN_PARAMS",
    "HypersphereHead", "SphereGeometry", "margin2_from_param", "sphere_geometry",
]
