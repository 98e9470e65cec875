"""privbench: how much do trained models leak about their training data, and which defense buys the most privacy
for the least accuracy?

The public Python API; ``python -m bench`` (or ``privbench``) is the same on the command line::

    import privbench

    rows = privbench.run_grid("smoke")                  # train, attack, measure (cached stage by stage)
    rows.groupby(["defense", "attack"])["auc"].mean()
    board = privbench.leaderboard(rows)                 # one row per setting, with 95 % bootstrap CIs
    table = privbench.audit(target_outputs, target_membership, labels, reference_outputs, reference_membership)
    privbench.components("attacks")                     # what is registered, with parameters and tags
    privbench.options("training")                       # a grid's training options: optimizer, lr schedule, ...

Components come from the rooms ``targets`` (datasets, architectures, training), ``defenses`` and ``attacks``, and
from any installed package that declares the ``privbench.components`` entry-point group.
"""

from bench import __version__
from bench.api import CellsFailed, audit, components, leaderboard, options, read_samples, read_store, run_grid

__all__ = ["CellsFailed", "__version__", "audit", "components", "leaderboard", "options", "read_samples",
           "read_store", "run_grid"]
