"""Modules that are imported on first use: registering components must not pay for torch.

Every command, ``python -m bench list`` included, imports every module of ``targets``, ``defenses`` and ``attacks``
to register the components, and importing torch costs about two seconds, most of a listing. A component module
therefore writes::

    from privkernel.lazy import lazy_import

    torch = lazy_import("torch")

and uses ``torch.func.vmap``, ``torch.nn.functional.cross_entropy`` and the like at its call sites: torch is loaded
the first time one of its attributes is read, i.e. when a model is built or trained. A module-level
``from torch import nn`` (or ``import torch``) loads it at once, so component modules write neither.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def lazy_import(name: str) -> types.ModuleType:
    """The module ``name``, executed only when one of its attributes is first read.

    Parameters
    ----------
    name
        Absolute module name, e.g. ``"torch"``.

    Returns
    -------
    types.ModuleType
        The module in :data:`sys.modules` when it is there already (loaded or lazy); otherwise a new module, put in
        :data:`sys.modules` under ``name``, whose loader (wrapped in :class:`importlib.util.LazyLoader`) runs on the
        first attribute access. A later ``import name`` returns this same object (and loads it).

    Raises
    ------
    ModuleNotFoundError
        When no module ``name`` can be found. Finding it reads no code of the module, only the import path.

    Notes
    -----
    The module's code runs at the first attribute read, wherever that happens, so an error in it surfaces there;
    a ``from name import x`` or ``import name`` statement reads an attribute and loads it at once.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def is_loaded(name: str) -> bool:
    """Whether the module ``name`` has been executed: it is in :data:`sys.modules` and not still waiting, as
    returned by :func:`lazy_import`, for its first attribute read. Reading this reads no attribute of the module."""
    module = sys.modules.get(name)
    # type() reads no attribute: a lazy module's class is importlib's _LazyModule until its first attribute read
    return module is not None and type(module) is not importlib.util._LazyModule
