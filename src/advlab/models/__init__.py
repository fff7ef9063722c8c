"""Everything that is a model: the zoo and the one ``load_model``, checkpoints, black boxes, wrappers.

* :mod:`advlab.models.zoo` — ``create_model`` (architectures by name) and ``load_model`` (shipped
  checkpoint names, checkpoint paths and scikit-learn target names);
* :mod:`advlab.models.nets` — the classifiers; :mod:`advlab.models.dense` — segmentation and detection nets;
  :mod:`advlab.models.checkpoint` — checkpoint I/O;
* :mod:`advlab.models.blackbox` — ``BlackBox``, a model seen only through its predictions;
* :mod:`advlab.models.sklearn` — scikit-learn targets, trained on demand, as black boxes;
* :mod:`advlab.models.wrappers` — input transformations: ``Defended`` is a model behind one.
"""

from advlab.models.blackbox import BlackBox, QueryBudgetExceeded, QuerySession, as_blackbox
from advlab.models.checkpoint import CheckpointError, load_state, read_metadata, save_checkpoint, tensor_digest
from advlab.models.nets import (
    MLP,
    LeNet5,
    NormalizationUnits,
    Normalize,
    Normalized,
    SmallCNN,
    SmallGoogLeNet,
    with_normalization,
)
from advlab.models.sklearn import load_sklearn_model
from advlab.models.wrappers import Defended, parse_defense, wrap_defense
from advlab.models.zoo import (
    ARCHITECTURES,
    WEIGHTS_DIR,
    ArchInfo,
    architecture_task,
    check_input_shape,
    create_model,
    list_models,
    list_pretrained,
    load_model,
    register_model,
    resolve_checkpoint,
)

__all__ = [
    "ARCHITECTURES", "MLP", "WEIGHTS_DIR", "ArchInfo", "BlackBox", "CheckpointError", "Defended", "LeNet5",
    "NormalizationUnits", "Normalize", "Normalized", "QueryBudgetExceeded", "QuerySession", "SmallCNN",
    "SmallGoogLeNet", "architecture_task", "as_blackbox",
    "check_input_shape", "create_model", "list_models", "list_pretrained", "load_model", "load_sklearn_model",
    "load_state", "parse_defense", "read_metadata", "register_model", "resolve_checkpoint", "save_checkpoint",
    "tensor_digest", "with_normalization", "wrap_defense",
]
