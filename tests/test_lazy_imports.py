"""Listing and validating components imports none of the heavy optional libraries, nor torch; using them does.

Every command (``python -m bench list`` included) imports every module of ``targets``, ``defenses`` and ``attacks``
to register the components, so a module-level ``import rdkit`` (or opacus, matplotlib, scikit-learn, scipy) would
cost every command its import time. These libraries are imported inside the functions that need them. torch, which
most component modules use throughout, is bound at module level by :func:`privkernel.lazy.lazy_import` and loaded
at the first use of one of its attributes. The checks run in a fresh interpreter, since this test process has
imported all of them already.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from privkernel.lazy import is_loaded, lazy_import

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("rdkit", "opacus", "matplotlib", "sklearn", "scipy")
#: Bound at module level by ``privkernel.lazy.lazy_import``: in ``sys.modules`` at once, executed on first use.
LAZY = ("torch",)

#: Records, for each heavy or lazy library, the innermost privbench frame (file:line) of the import that first
#: loads it; ``lazy_import``'s own look-up of a module (which runs none of its code) is not a load.
RECORDER = textwrap.dedent(f"""
    import importlib.abc, json, sys, traceback

    HEAVY, LAZY = {HEAVY!r}, {LAZY!r}
    ROOT = {str(ROOT)!r}
    first = {{}}

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in HEAVY + LAZY and top not in first:
                stack = traceback.extract_stack()[:-1]
                if any(f.filename.endswith("privkernel/lazy.py") for f in stack):
                    return None
                ours = [f for f in stack if f.filename.startswith(ROOT) and "/tests/" not in f.filename]
                first[top] = f"{{ours[-1].filename[len(ROOT) + 1:]}}:{{ours[-1].lineno}}" if ours else "?"
            return None  # the import goes on as usual

    sys.meta_path.insert(0, Recorder())

    def loaded(names=HEAVY + LAZY):
        from privkernel.lazy import is_loaded

        return {{m: first.get(m, "?") for m in names if is_loaded(m)}}
""")


def run_python(code: str) -> dict:
    """Run ``RECORDER + code`` in a fresh interpreter; ``code`` prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", RECORDER + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registering_describing_and_validating_grids_import_no_heavy_library():
    result = run_python("""
        from privkernel.registry import REGISTRIES, load_plugins, plugin_problems

        load_plugins()
        assert not plugin_problems(), [p.line() for p in plugin_problems()]
        described = 0
        for registry in REGISTRIES.values():
            for name in registry.names():
                registry.get(name).describe()
                described += 1
        from bench.grid import load_grid

        cells = {name: len(load_grid(name).cells) for name in ("smoke", "default")}
        print(json.dumps({"loaded": loaded(), "described": described, "cells": cells}))
    """)
    assert result["described"] > 20 and min(result["cells"].values()) > 0
    assert result["loaded"] == {}, (
        "registering, describing or validating components imported " + ", ".join(
            f"{m} (first at {where})" for m, where in result["loaded"].items())
        + "; import it inside the function that needs it (torch: bind it with privkernel.lazy.lazy_import and read "
        "its attributes only inside functions)"
    )


def test_each_heavy_library_is_imported_by_the_function_that_needs_it():
    steps = run_python("""
        import numpy as np

        from privkernel.registry import load_plugins

        load_plugins()
        steps = [("registered", loaded(HEAVY))]

        from targets.featurizers import featurize

        X, ok = featurize(["CCO", "c1ccccc1"], "ecfp4", 64)
        assert X.shape == (2, 64) and ok.all()
        steps.append(("featurize", loaded(HEAVY)))

        from attacks.metric import modified_entropy

        modified_entropy(np.log(np.full((3, 2), 0.5)), np.array([0, 1, 0]))
        steps.append(("logsumexp", loaded(HEAVY)))

        from defenses.dpsgd import accountant_epsilon

        assert accountant_epsilon(1.0, 0.1, 10, 1e-5, "rdp") > 0
        steps.append(("accountant", loaded(HEAVY)))

        from attacks.classifier import member_probabilities

        rng = np.random.default_rng(0)
        member = np.arange(20) % 2 == 0
        member_probabilities(rng.normal(size=(20, 3)), member, rng.normal(size=(5, 3)), hidden=4, max_iter=5,
                             max_train=None, seed=0, attack="test")
        steps.append(("classifier", loaded(HEAVY)))

        from bench.plots import pyplot

        pyplot()
        steps.append(("plot", loaded(HEAVY)))
        print(json.dumps(steps))
    """)
    new = {}
    seen: set[str] = set()
    for step, modules in steps:
        new[step] = sorted(set(modules) - seen)
        seen |= set(modules)
    assert new == {
        "registered": [],
        "featurize": ["rdkit"],
        "logsumexp": ["scipy"],
        "accountant": ["opacus"],
        "classifier": ["sklearn"],
        "plot": ["matplotlib"],
    }


#: Registers the components, then builds, trains and observes tiny models through them (an MLP under DP-SGD, a
#: 3-D CNN from ``targets._layers``), printing what the run computed; EAGER is replaced by ``import torch`` or not.
TRAIN_AFTER_REGISTERING = """
    EAGER
    import numpy as np

    from privkernel.registry import ARCHITECTURES, DEFENSES, load_plugins

    load_plugins()
    lazy_at_registration = not loaded(LAZY)

    from targets.ensemble import Ensemble
    from targets.membership import membership_matrix
    from targets.white_box import white_box_features

    results = {}
    for arch, params, shape, defense in (("mlp", {"depth": 1, "width": 8}, (6,), "dpsgd"),
                                         ("cnn3d", {"channels": 2, "depth": 1}, (3, 3, 3), "none")):
        component = ARCHITECTURES.get(arch)
        settings = component.validate(params)
        factory = lambda: component.obj(shape, 2, **settings)
        ensemble = Ensemble.initialise(factory, 2, seed=0)  # the first use of torch: it is loaded here
        import torch

        g = torch.Generator().manual_seed(0)
        X = torch.randn(32, *shape, generator=g)
        y = (X.flatten(1)[:, 0] > 0).long()
        keep = membership_matrix(2, len(X), seed=0)
        built = DEFENSES.get(defense).obj(**DEFENSES.get(defense).validate({}))
        log = built.train(ensemble, X, y, keep, seed=0, epochs=2, batch_size=8, lr=0.01, optimizer="adam",
                          momentum=0.0)
        features, _ = white_box_features(ensemble, X[:4], y[:4])
        results[arch] = {
            "history": log.history.tolist(),
            "predict": ensemble.predict(X[:4]).tolist(),
            "white_box": features.tolist(),
        }
    import targets.ensemble

    same = sys.modules["torch"] is torch is targets.ensemble.torch
    print(json.dumps({"lazy_at_registration": lazy_at_registration, "same_module": same, "results": results}))
"""


def test_models_train_after_registration_left_torch_unloaded_and_compute_what_an_eager_torch_computes():
    lazy = run_python(TRAIN_AFTER_REGISTERING.replace("EAGER", "pass"))
    eager = run_python(TRAIN_AFTER_REGISTERING.replace("EAGER", "import torch"))
    assert lazy["lazy_at_registration"] and not eager["lazy_at_registration"]
    assert lazy["same_module"] and eager["same_module"]
    assert all(np.isfinite(lazy["results"][arch]["history"]).all() for arch in lazy["results"])
    assert lazy["results"] == eager["results"]


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The name of a fresh module that counts its executions in ``sys.lazy_probe_runs``."""
    (tmp_path / "lazy_probe_module.py").write_text(
        "import sys\nsys.lazy_probe_runs = getattr(sys, 'lazy_probe_runs', 0) + 1\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "lazy_probe_runs", 0, raising=False)
    yield "lazy_probe_module"
    sys.modules.pop("lazy_probe_module", None)


def test_lazy_import_runs_the_module_at_the_first_attribute_read_only(probe):
    module = lazy_import(probe)
    assert sys.modules[probe] is module and not is_loaded(probe) and sys.lazy_probe_runs == 0
    assert lazy_import(probe) is module and sys.lazy_probe_runs == 0
    assert module.VALUE == 42 and is_loaded(probe) and sys.lazy_probe_runs == 1
    assert importlib.import_module(probe) is module and lazy_import(probe) is module
    assert module.VALUE == 42 and sys.lazy_probe_runs == 1


def test_an_import_statement_after_lazy_import_loads_the_same_module(probe):
    module = lazy_import(probe)
    imported = __import__(probe)
    assert imported is module and is_loaded(probe) and sys.lazy_probe_runs == 1


def test_lazy_import_returns_a_loaded_module_and_refuses_a_missing_one():
    assert lazy_import("json") is json and is_loaded("json")
    assert not is_loaded("no_such_module_for_lazy_import")
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_lazy_import"):
        lazy_import("no_such_module_for_lazy_import")
