"""The universal patch on signs scored on test images no earlier patch run has scored (4000–4799).

    PYTHONPATH=src python benchmarks/patch_heldout.py 45     # rotation ±45°
    PYTHONPATH=src python benchmarks/patch_heldout.py 180

The patch is the one ``advlab physical --attack patch -o target=speed-80 -o size_fraction=0.1
-o rotation=R -o steps=2000 -o lr=0.01 --craft 2000`` crafts (same seed, same training images);
only the held-out images differ. Prints the study's table as JSON (docs/physical.md).
"""

from __future__ import annotations

import json
import sys

import torch

from advlab.data import load_dataset
from advlab.data.sign_art import SIGN_CLASSES
from advlab.lab.images import Study, patch_study
from advlab.models import load_model


def main() -> None:
    torch.set_num_threads(1)
    rotation = float(sys.argv[1]) if len(sys.argv) > 1 else 45.0
    (xc, yc), (xt, yt) = load_dataset("signs", "train"), load_dataset("signs", "test")
    study = Study(load_model("signnet-signs"), SIGN_CLASSES, xc[:2000], yc[:2000], xt[4000:4800], yt[4000:4800])
    out = patch_study(study, {"target": "speed-80", "size_fraction": 0.1, "rotation": rotation, "steps": 2000,
                              "lr": 0.01})
    print(json.dumps({"rotation": rotation, "head": out.tables[0][1], "rows": out.tables[0][2]}))


if __name__ == "__main__":
    main()
