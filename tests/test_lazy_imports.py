"""Listing and validating components imports none of the heavy optional libraries; using them does.

Every command (``python -m bench list`` included) imports every module of ``targets``, ``defenses`` and ``attacks``
to register the components, so a module-level ``import rdkit`` (or opacus, matplotlib, scikit-learn, scipy) would
cost every command its import time. These libraries are imported inside the functions that need them; the checks
run in a fresh interpreter, since this test process has imported all of them already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("rdkit", "opacus", "matplotlib", "sklearn", "scipy")

#: Records, for each heavy library, the innermost privbench frame (file:line) of the import that first loads it.
RECORDER = textwrap.dedent(f"""
    import importlib.abc, json, sys, traceback

    HEAVY = {HEAVY!r}
    ROOT = {str(ROOT)!r}
    first = {{}}

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in HEAVY and top not in first:
                ours = [f for f in traceback.extract_stack()[:-1]
                        if f.filename.startswith(ROOT) and "/tests/" not in f.filename]
                first[top] = f"{{ours[-1].filename[len(ROOT) + 1:]}}:{{ours[-1].lineno}}" if ours else "?"
            return None  # the import goes on as usual

    sys.meta_path.insert(0, Recorder())

    def loaded():
        return {{m: first.get(m, "?") for m in HEAVY if m in sys.modules}}
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
        + "; import it inside the function that needs it"
    )


def test_each_heavy_library_is_imported_by_the_function_that_needs_it():
    steps = run_python("""
        import numpy as np

        from privkernel.registry import load_plugins

        load_plugins()
        steps = [("registered", loaded())]

        from targets.featurizers import featurize

        X, ok = featurize(["CCO", "c1ccccc1"], "ecfp4", 64)
        assert X.shape == (2, 64) and ok.all()
        steps.append(("featurize", loaded()))

        from attacks.metric import true_class_log_probs

        true_class_log_probs(np.log(np.full((3, 2), 0.5)), np.array([0, 1, 0]))
        steps.append(("logsumexp", loaded()))

        from defenses.dpsgd import accountant_epsilon

        assert accountant_epsilon(1.0, 0.1, 10, 1e-5, "rdp") > 0
        steps.append(("accountant", loaded()))

        from attacks.classifier import member_probabilities

        rng = np.random.default_rng(0)
        member = np.arange(20) % 2 == 0
        member_probabilities(rng.normal(size=(20, 3)), member, rng.normal(size=(5, 3)), hidden=4, max_iter=5,
                             max_train=None, seed=0, attack="test")
        steps.append(("classifier", loaded()))

        from bench.plots import pyplot

        pyplot()
        steps.append(("plot", loaded()))
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
