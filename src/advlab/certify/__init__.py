"""Certified robustness: proven lower bounds next to the attacked upper bounds.

Bound propagation for L∞ (:mod:`advlab.certify.bounds`: IBP, CROWN-IBP, CROWN) over a model read
as a chain of layers (:mod:`advlab.certify.chain`), and certified training
(:mod:`advlab.certify.training`: the ``ibp`` and ``crown-ibp`` training defenses).
"""

from advlab.certify.bounds import (
    METHODS,
    Method,
    input_box,
    logit_bounds,
    margin_lower_bounds,
    spec_matrix,
    verified,
)
from advlab.certify.chain import build_chain

__all__ = [
    "METHODS", "Method", "build_chain", "input_box", "logit_bounds", "margin_lower_bounds", "spec_matrix",
    "verified",
]
