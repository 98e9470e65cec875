"""Defenses: one module per defense, registered in :data:`privkernel.registry.DEFENSES`.

Importing the package imports every module in it, so a new defense is one new file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
