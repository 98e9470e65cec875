"""Datasets, featurizers, architectures, the membership protocol, and the training and observation of the M models.

Importing the package imports every module in it (which registers its components), so a new component is one new
file. A module whose name starts with an underscore (``_layers``) is skipped: it holds implementation that needs a
heavy library (torch) at import time, and the module that uses it imports it inside the function that needs it, so
that registering components stays light.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
