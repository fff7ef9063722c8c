"""The physical lab: attacked signs photographed at every cell of the lab grid (``advlab physical``).

:mod:`advlab.lab.attacks` crafts an attacked sign (RP2's sticker, the single-view PGD baseline);
:mod:`advlab.lab.grid` renders signs at the lab grid's views and counts targeted success per cell;
:mod:`advlab.lab.experiment` runs both and returns the summary the report
(:mod:`advlab.report.physical`) is written from.
"""

from advlab.lab.attacks import COMPARE, CRAFTERS, Crafted, FrontalView, Scene, craft_pgd, craft_rp2
from advlab.lab.experiment import ACCEPTANCE, LabOutcome, LabSetup, choose_grid, run_lab
from advlab.lab.grid import Cells, LabViews, cell_counts, lab_predictions

__all__ = ["ACCEPTANCE", "COMPARE", "CRAFTERS", "Cells", "Crafted", "FrontalView", "LabOutcome", "LabSetup",
           "LabViews", "Scene", "cell_counts", "choose_grid", "craft_pgd", "craft_rp2", "lab_predictions", "run_lab"]
