"""advlab: a laboratory for adversarial machine learning in PyTorch.

Attack models (evasion, black-box, poisoning, patches), defend them, and evaluate them honestly.
"""

from advlab._version import __version__
from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.models import create_model, list_models, list_pretrained, load_model
from advlab.threat import ThreatModel

__all__ = [
    "ThreatModel",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "list_pretrained",
    "load_dataset",
    "load_model",
]
