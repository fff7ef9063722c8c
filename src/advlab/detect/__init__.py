"""Detecting adversarial examples and refusing to predict (issue 16).

``make_detector(spec)`` builds a detector by name, ``fit`` fits it to a classifier, ``calibrate``
fixes its threshold at a false-positive rate on held-out clean inputs, ``reject`` applies it, and
``save_detector`` / ``load_detector`` keep it in a safetensors file (see ``advlab.detect.base``).
"""

from advlab.detect.base import (
    DETECTORS,
    Detector,
    defended_outcome,
    load_detector,
    make_detector,
    register_detector,
    save_detector,
)
from advlab.detect.kdbu import KernelDensityUncertainty
from advlab.detect.lid import LocalIntrinsicDimensionality
from advlab.detect.network import NetworkDetector

__all__ = ["DETECTORS", "Detector", "KernelDensityUncertainty", "LocalIntrinsicDimensionality", "NetworkDetector",
           "defended_outcome", "load_detector", "make_detector", "register_detector", "save_detector"]
