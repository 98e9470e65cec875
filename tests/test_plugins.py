"""Third-party components through the ``privbench.components`` entry points.

Each test builds a tiny plugin package, installs it with pip into a folder (``pip install --target``, so that the
distribution's metadata and entry points are real), and runs ``python -m bench`` with that folder on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.store import read_store

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1"

[tool.setuptools]
packages = ["{package}"]

[project.entry-points."privbench.components"]
{package} = "{package}"
"""

COIN_ATTACK = """\
from attacks.signals import true_class_loss
from attacks.requirements import Release, always
from privkernel.registry import ATTACKS, Param


@ATTACKS.register(
    "{name}",
    description="The LOSS attack's score times a constant (a plugin's attack).",
    params=[Param("scale", float, 2.0, "multiplies the score", low=0.0, low_inclusive=False)],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def scaled_loss(data, scale):
    return -scale * true_class_loss(data.target, data.labels)
"""


def install_plugin(tmp_path: Path, dist: str, package: str, code: str) -> Path:
    """Build and install a one-module plugin into ``tmp_path/site``; return that folder."""
    source = tmp_path / f"src-{dist}"
    (source / package).mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, package=package))
    (source / package / "__init__.py").write_text(textwrap.dedent(code))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        check=True, capture_output=True, text=True,
    )
    return site


def bench(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def coin_site(tmp_path_factory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("plugin"), "privbench-coin", "privbench_coin",
                          COIN_ATTACK.format(name="scaled_loss"))


def test_an_installed_plugins_attack_is_listed(coin_site):
    done = bench(coin_site, "list", "attacks")
    assert done.returncode == 0, done.stderr
    assert "scaled_loss" in done.stdout and "a plugin's attack" in done.stdout
    assert "rmia" in done.stdout  # privbench's own attacks are still there


def test_an_installed_plugins_attack_runs_in_a_grid_and_its_rows_are_stored(coin_site, tmp_path):
    grid = tmp_path / "plugin.yaml"
    grid.write_text(textwrap.dedent("""\
        name: plugin
        datasets: [{name: synthetic_purchase, params: {n_records: 200, n_features: 20, n_classes: 2}}]
        architectures: [logreg]
        defenses: [none]
        attacks: [loss, {name: scaled_loss, params: {scale: 3.0}}]
        protocol: {n_models: 2, n_targets: 1, calibration_models: 1}
        training: {epochs: 2}
    """))
    done = bench(coin_site, "grid", "--grid", str(grid), "--quiet", "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    rows = read_store(tmp_path / "results").set_index("attack")
    # the plugin's score is 3 × the LOSS attack's score: a monotone map, so the same ROC
    assert rows.loc["scaled_loss", "auc"] == pytest.approx(rows.loc["loss", "auc"])
    assert rows.loc["scaled_loss", "attack.scale"] == 3.0


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("raise RuntimeError('the plugin is broken')\n", "RuntimeError: the plugin is broken"),
        (COIN_ATTACK.format(name="loss"), "'loss' is already registered by attacks.loss"),
        (COIN_ATTACK.format(name="coin").replace("2.0, \"multiplies", "-1.0, \"multiplies"),
         "the default of parameter 'scale': scale=-1.0 is out of range"),
    ],
    ids=["fails-to-import", "name-taken", "invalid-parameter"],
)
def test_a_bad_plugin_is_named_in_one_line_with_exit_2_and_the_rest_still_loads(tmp_path, code, problem):
    site = install_plugin(tmp_path, "privbench-bad", "privbench_bad", code)
    done = bench(site, "list", "attacks")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "plugin 'privbench-bad'" in errors[0] and "privbench_bad" in errors[0] and problem in errors[0]
    assert "pip uninstall privbench-bad" in errors[0]
    assert "Traceback" not in done.stderr
    assert "rmia" in done.stdout and "loss" in done.stdout  # the other components loaded, privbench's loss intact
    run = bench(site, "grid", "--grid", "smoke", "--dry-run")
    assert run.returncode == 2 and "plugin 'privbench-bad'" in run.stderr
