"""Datasets, featurizers, architectures, the membership protocol, and the training and observation of the M models.

Importing the package imports every module in it (which registers its components), so a new component is one new
file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
