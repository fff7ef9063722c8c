"""Input-transformation defenses, where users look for them.

They are models (a defended model is a model, and ``load_model`` re-wraps a checkpoint trained
behind one), so they live in :mod:`advlab.models.wrappers`; this module re-exports them.
"""

from advlab.models.wrappers import (
    JPEG,
    TRANSFORMS,
    BitDepth,
    Defended,
    GaussianSmoothing,
    MedianSmoothing,
    RandomResizePad,
    Thermometer,
    Transform,
    parse_defense,
    wrap_defense,
)

__all__ = [
    "JPEG", "TRANSFORMS", "BitDepth", "Defended", "GaussianSmoothing", "MedianSmoothing", "RandomResizePad",
    "Thermometer", "Transform", "parse_defense", "wrap_defense",
]
