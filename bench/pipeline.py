"""The cached stages of one cell: features → split → models → observations → scores → metrics.

Every stage output is a cache entry whose key hashes the stage name, its version (:data:`STAGE_VERSIONS`),
its inputs' keys and its parameters. Keys are computed from the cell's spec alone, so a warm rerun reads the
final metrics without loading a dataset or a model, and a stage is only computed when an entry downstream of
it is missing. Bump a stage's version whenever its code changes what it produces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, singledispatchmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from attacks.requirements import (
    LeakedMembership,
    PerturbedLabelQueries,
    Population,
    RecordFeatures,
    Release,
    Requirement,
    RoundSnapshots,
    WhiteBoxFeatures,
    requirements_of,
)
from attacks.signals import model_signals
from bench import stopping
from bench.audit import (
    Audit,
    Servable,
    calibration_models,
    score_target,
    skip_reason,
    target_metrics,
    union_metrics,
)
from bench.cache import Cache, stage_key
from bench.metrics import UTILITY
from bench.rows import AuditedRecords, StageTime, TargetResult, UnionResult, cell_rows, samples_table
from bench.spec import Cell, ComponentSpec, Union
from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, Registry
from targets.datasets import Dataset
from targets.ensemble import Ensemble, Inputs
from targets.membership import membership_matrix, split_pool_test
from targets.observation import ROUND_VIEWS, perturbed_label_queries, release, round_releases
from targets.white_box import white_box_features

INPUT_SEP = "/"  # dict-shaped inputs (graphs) are stored as arrays "X/atoms", "X/bonds", ...

STAGE_VERSIONS = {
    "features": 1, "split": 1, "models": 2, "observations": 3, "scores": 1, "metrics": 8,
    "robustness": 1, "white_box": 1,
}
SNAPSHOT = "snapshot."  # models-stage tensors of intermediate models (federated rounds)



@dataclass(frozen=True)
class CellResult:
    """The store rows and per-record samples of one cell, whether it was read entirely from the cache, how many
    unreadable cache entries were set aside and recomputed, and the entries computed, by stage."""

    cell: Cell
    rows: list[dict[str, Any]]
    samples: pd.DataFrame
    cached: bool
    healed: int = 0
    computed: Mapping[str, int] = field(default_factory=dict)
    #: Per stage: seconds of its own work, and how many entries were computed and read (:meth:`CellRun.timings`).
    timings: Mapping[str, StageTime] = field(default_factory=dict)
    #: The distinct warnings raised while the cell ran (:func:`warning_line`), for the run's summary.
    warnings: tuple[str, ...] = ()


class CellRun:
    """Runs (or reads from the cache) every stage of one cell.

    Parameters
    ----------
    cell
        The cell's spec.
    cache
        Where stage outputs are read and written.
    device
        Torch device for training and observation.
    """

    def __init__(self, cell: Cell, cache: Cache, device: str = "cpu",
                 on_stage: Callable[[str], None] | None = None) -> None:
        self.cell = cell
        self.cache = cache
        self.device = torch.device(device)
        self.protocol = cell.protocol_params
        self.on_stage = on_stage
        self._loaded: dict[str, Any] = {}
        #: Seconds spent in each stage's own work (reading or computing it, less the stages it read), by stage.
        self.seconds: Counter[str] = Counter()
        self._inner: list[float] = []  # per stage in progress: the seconds of the stages it read

    def _stage(self, stage: str, key: str, kind: str, compute: Callable[[], Any], spec: Any) -> Any:
        """A stage's output, read or computed once per run of the cell."""
        if key not in self._loaded:
            if self.on_stage is not None:
                self.on_stage(stage)
            start = time.perf_counter()
            self._inner.append(0.0)
            try:
                self._loaded[key] = self.cache.get_or_compute(stage, key, kind, compute, spec)
            finally:
                elapsed, inner = time.perf_counter() - start, self._inner.pop()
                self.seconds[stage] += elapsed - inner
                if self._inner:
                    self._inner[-1] += elapsed
            stopping.check()  # a stop asked for while the stage ran: it is cached, the cell ends here
        return self._loaded[key]

    # --- keys ------------------------------------------------------------------------------------------------

    def _key(self, stage: str, **spec: Any) -> str:
        return stage_key(stage, STAGE_VERSIONS[stage], **spec)

    @staticmethod
    def _versioned(spec: ComponentSpec, registry: Registry) -> dict[str, Any]:
        """A component's spec with its code version, as it enters cache keys."""
        return {**spec.as_dict(), "version": registry.get(spec.name).version}

    @cached_property
    def features_key(self) -> str:
        spec = self.cell.dataset
        version = DATASETS.get(spec.name).tag("layout", spec.kwargs)
        # the layout of the arrays (a featurizer's version) enters the key from 2 on, so older keys stay put
        return self._key("features", dataset=self._versioned(spec, DATASETS), files=self._file_digests(),
                         **({"layout": version} if version > 1 else {}))

    def _file_digests(self) -> dict[str, str]:
        """SHA-256 of the files a dataset reads (its ``files`` tag names the path parameters): an edited file
        gets a new key instead of the cached features of its old content."""
        spec = self.cell.dataset
        digests = {}
        for param in DATASETS.get(spec.name).tags.get("files", ()):
            path = spec.kwargs.get(param)
            if path is None or not Path(path).is_file():
                digests[param] = "missing"  # the loader reports the missing file when it runs
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            digests[param] = digest.hexdigest()
        return digests

    @cached_property
    def split_key(self) -> str:
        p = self.protocol
        return self._key(
            "split", features=self.features_key, test_fraction=p["test_fraction"], n_models=p["n_models"],
            seed=self.cell.seed,
        )

    @cached_property
    def models_key(self) -> str:
        c = self.cell
        # a release-only defense trains exactly as no defense: its cells share the undefended models
        trained_as = ComponentSpec("none") if self.defense.release_only else c.defense
        defense = self._versioned(trained_as, DEFENSES)
        return self._key(
            "models", features=self.features_key, split=self.split_key,
            architecture=self._versioned(c.architecture, ARCHITECTURES), defense=defense,
            training=c.training_params, seed=c.seed,
        )

    @cached_property
    def observations_key(self) -> str:
        return self._key(
            "observations", models=self.models_key, defense=self._versioned(self.cell.defense, DEFENSES),
            seed=self.cell.seed,
        )

    def scores_key(self, attack: ComponentSpec, target: int) -> str:
        return self._key(
            "scores", observations=self.observations_key, attack=self._versioned(attack, ATTACKS), target=target,
            calibration=self.calibration_models(target),
        )

    def metrics_key(self, attack: ComponentSpec, target: int) -> str:
        return self._key("metrics", scores=self.scores_key(attack, target), split=self.split_key,
                         n_targets=self.protocol["n_targets"])

    # --- stages ----------------------------------------------------------------------------------------------

    def features(self) -> dict[str, np.ndarray]:
        def compute() -> dict[str, np.ndarray]:
            spec = self.cell.dataset
            dataset: Dataset = DATASETS.get(spec.name).obj(**spec.kwargs)
            X = dataset.X if isinstance(dataset.X, dict) else {"": dataset.X}
            return {
                **{f"X{INPUT_SEP}{k}" if k else "X": v for k, v in X.items()},
                "y": dataset.y, "task": np.array(dataset.task), "n_classes": np.array(dataset.n_classes),
            }

        return self._stage("features", self.features_key, "arrays", compute, self.cell.dataset.as_dict())

    def inputs(self, index: np.ndarray | None = None) -> Inputs:
        """The model inputs of the records ``index`` (all if None) as tensors on the device."""
        f = self.features()
        select = (lambda a: a) if index is None else (lambda a: a[index])
        if "X" in f:
            return torch.as_tensor(select(f["X"]), device=self.device)
        prefix = f"X{INPUT_SEP}"
        return {k[len(prefix):]: torch.as_tensor(select(v), device=self.device) for k, v in f.items()
                if k.startswith(prefix)}

    def split(self) -> dict[str, np.ndarray]:
        def compute() -> dict[str, np.ndarray]:
            f = self.features()
            seed = self.cell.seed
            pool, test = split_pool_test(
                f["y"], self.protocol["test_fraction"], derive_seed(seed, "split"),
                stratify=str(f["task"]) == "classification",
            )
            keep = membership_matrix(self.protocol["n_models"], len(pool), derive_seed(seed, "membership"))
            return {"pool": pool, "test": test, "keep": keep}

        return self._stage("split", self.split_key, "arrays", compute, {"features": self.features_key})

    @cached_property
    def defense(self):
        spec = self.cell.defense
        return DEFENSES.get(spec.name).obj(**spec.kwargs)

    def _factory(self, features: Mapping[str, np.ndarray]):
        spec = self.cell.architecture
        build = ARCHITECTURES.get(spec.name).obj
        X = self.inputs(np.arange(1))
        input_shape = {k: tuple(v.shape[1:]) for k, v in X.items()} if isinstance(X, dict) else tuple(X.shape[1:])
        kwargs = {**spec.kwargs, **self.defense.architecture_overrides()}
        return lambda: build(input_shape, int(features["n_classes"]), **kwargs)

    def models(self) -> dict[str, torch.Tensor]:
        def compute() -> dict[str, torch.Tensor]:
            f, s = self.features(), self.split()
            X = self.inputs(s["pool"])
            y = torch.as_tensor(f["y"][s["pool"]], device=self.device)
            ensemble = Ensemble.initialise(
                self._factory(f), self.protocol["n_models"], derive_seed(self.cell.seed, "models"), self.device
            )
            log = self.defense.train(
                ensemble, X, y, s["keep"], seed=derive_seed(self.cell.seed, "training"), **self.cell.training_params
            )
            trained_on = s["keep"] if log.trained_on is None else np.asarray(log.trained_on, dtype=bool)
            if (trained_on & ~s["keep"]).any():
                raise RuntimeError(f"defense {self.cell.defense.label()} trained models on records they do not keep")
            return {
                **ensemble.state(), "history.loss": torch.from_numpy(log.history),
                "membership": torch.from_numpy(trained_on),
                **{f"{SNAPSHOT}{k}": v for k, v in log.snapshots.items()},
                **{f"info.{k}": torch.tensor(float(v), dtype=torch.float64) for k, v in log.info.items()},
            }

        return self._stage("models", self.models_key, "tensors", compute, self.cell.models_spec())

    def membership(self) -> np.ndarray:
        """``[M, N]``: the pool records each model trained on — the split's ``keep``, less the members a defense
        held out of training (they are audited as non-members)."""
        return self.models()["membership"].numpy()

    def _ensemble(self) -> Ensemble:
        """The trained models, rebuilt from the cached weights."""
        state = {k: v for k, v in self.models().items() if k.startswith(("param.", "buffer."))}  # not membership
        return Ensemble.from_state(self._factory(self.features()), state, self.device)

    def training_info(self) -> dict[str, float]:
        """Scalar facts the training reported (e.g. the ε a private training reached)."""
        return {k[len("info."):]: float(v) for k, v in self.models().items() if k.startswith("info.")}

    @property
    def task(self) -> str:
        return str(self.features()["task"])

    def observations(self) -> dict[str, np.ndarray]:
        """Every model's released outputs on the pool and test records, and its utility (``utility/<name>``).

        Classification releases log-probabilities ``[M, N, C]``; regression releases predictions ``[M, N, 1]``.
        Utility is that of what is released (a release may change a prediction, e.g. by rounding ties). A
        federated cell also releases, to an insider, every round's global model (``rounds.global/pool``
        ``[T, M, N, C]``) and every site's local model (``rounds.site/pool`` ``[T, M, K, N, C]``), and the same
        on the test records (``.../test``).
        """

        def compute() -> dict[str, np.ndarray]:
            f, s = self.features(), self.split()
            rng = np.random.default_rng(derive_seed(self.cell.seed, "release"))
            pool, test = self._release(self._ensemble(), rng)
            y = f["y"]
            utility = UTILITY[self.task](pool, y[s["pool"]], self.membership(), test, y[s["test"]])
            out = {"pool": pool, "test": test, **{f"utility/{k}": v for k, v in utility.items()}}
            snapshots = {k[len(SNAPSHOT):]: v for k, v in self.models().items() if k.startswith(SNAPSHOT)}
            buffers = {k: v for k, v in self.models().items() if k.startswith("buffer.")}
            for view in ROUND_VIEWS:
                releases = round_releases(
                    snapshots, buffers, self._factory(f), view, lambda ensemble: self._release(ensemble, rng),
                    self.device,
                )
                for part, arrays in zip(("pool", "test"), releases, strict=True):
                    out[f"rounds.{view}/{part}"] = arrays
            return {k: v for k, v in out.items() if v is not None}

        return self._stage(
            "observations", self.observations_key, "arrays", compute, {"models": self.models_key}
        )

    def _release(self, ensemble: Ensemble, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """What the defense releases of ``ensemble``'s outputs on the pool and on the test records."""
        s = self.split()
        return release(ensemble, self.inputs(), (s["pool"], s["test"]), self.task, self.defense, rng)

    def white_box(self) -> dict[str, np.ndarray]:
        """White-box features of every model on every pool record ``[M, N, F]`` (see
        :func:`targets.white_box.white_box_features`) and their names."""
        key = self._key("white_box", models=self.models_key)

        def compute() -> dict[str, np.ndarray]:
            f, s = self.features(), self.split()
            y = torch.as_tensor(f["y"][s["pool"]], device=self.device)
            features, names = white_box_features(self._ensemble(), self.inputs(s["pool"]), y)
            return {"features": features, "names": np.array(names)}

        return self._stage("white_box", key, "arrays", compute, {"models": self.models_key})

    def utility(self, target: int) -> dict[str, float]:
        """The target's utility columns (accuracies, or R² and MAE for regression)."""
        obs = self.observations()
        return {k.split("/", 1)[1]: float(v[target]) for k, v in obs.items() if k.startswith("utility/")}

    def calibration_models(self, target: int) -> list[int]:
        """The reference models whose own audits choose the target's thresholds."""
        return calibration_models(self.protocol["n_models"], target, self.protocol["calibration_models"])

    def robustness(self, requirement: PerturbedLabelQueries) -> np.ndarray:
        """Label-only queries: for each model and pool point, the fraction of ``requirement.queries`` Gaussian
        perturbations (standard deviation ``requirement.noise``, in feature units) that the model labels correctly
        (:func:`targets.observation.perturbed_label_queries`)."""
        noise, queries = requirement.noise, requirement.queries
        key = self._key("robustness", models=self.models_key, noise=noise, queries=queries, seed=self.cell.seed)

        def compute() -> dict[str, np.ndarray]:
            f, s = self.features(), self.split()
            y = torch.as_tensor(f["y"][s["pool"]], device=self.device)
            seed = derive_seed(self.cell.seed, "queries")
            return {"robustness": perturbed_label_queries(self._ensemble(), self.inputs(s["pool"]), y, noise, queries,
                                                          seed)}

        return self._stage("robustness", key, "arrays", compute, {"models": self.models_key})["robustness"]

    def rounds(self, requirement: RoundSnapshots) -> dict[str, np.ndarray]:
        """The released outputs after every round of the models of ``requirement.view`` (of its site for the
        sites' view) on the pool ``[T, M, N, C]`` and on the test records ``[T, M, P, C]``."""
        obs = self.observations()
        pool, test = obs[f"rounds.{requirement.view}/pool"], obs[f"rounds.{requirement.view}/test"]
        if requirement.site is not None:
            pool, test = pool[:, :, requirement.site], test[:, :, requirement.site]
        return {"rounds": pool, "population_rounds": test}

    @singledispatchmethod
    def serve(self, requirement: Requirement) -> dict[str, Any]:
        """The observations that meet an attack's ``requirement``, by their :class:`Audit` names.

        Raises
        ------
        BenchError
            For a type of requirement that no observation step serves.
        """
        raise BenchError(
            f"no observation step serves the requirement {requirement!r}; serve its type in CellRun.serve "
            "(bench/pipeline.py) from a function of targets/observation.py"
        )

    @serve.register
    def _(self, requirement: Release | Population | LeakedMembership) -> dict[str, Any]:
        # every audit holds the release, and the test records as population; a leak is drawn per target when scored
        return {}

    @serve.register
    def _(self, requirement: PerturbedLabelQueries) -> dict[str, Any]:
        return {"robustness": self.robustness(requirement)}

    @serve.register
    def _(self, requirement: WhiteBoxFeatures) -> dict[str, Any]:
        white_box = self.white_box()
        return {"white_box": white_box["features"], "white_box_names": tuple(white_box["names"].tolist())}

    @serve.register
    def _(self, requirement: RoundSnapshots) -> dict[str, Any]:
        return self.rounds(requirement)

    @serve.register
    def _(self, requirement: RecordFeatures) -> dict[str, Any]:
        f, s = self.features(), self.split()
        flat = f["X"].reshape(len(f["X"]), -1)
        return {"features": flat[s["pool"]], "population_features": flat[s["test"]]}

    @property
    def flat_features(self) -> bool:
        """Whether the inputs are one array per record (tabular, fingerprints, images), as
        :class:`attacks.requirements.RecordFeatures` serves them; graphs are not."""
        return "X" in self.features()

    def audit(self, attack: ComponentSpec | None = None) -> Audit:
        """The released outputs of the M models with their membership (the test set is the population), and
        whatever else ``attack``'s requirements ask for (:mod:`attacks.requirements`)."""
        obs, s, y = self.observations(), self.split(), self.features()["y"]
        served: dict[str, Any] = {}
        if attack is not None:
            for requirement in requirements_of(ATTACKS.get(attack.name), attack.kwargs):
                served.update(self.serve(requirement))
        return Audit(obs["pool"], self.membership(), y[s["pool"]], obs["test"], y[s["test"]], task=self.task,
                     **self._true_class, **served)

    @cached_property
    def _true_class(self) -> dict[str, np.ndarray]:
        """The true-class signals of every model on the pool and the population (:func:`attacks.signals.
        model_signals`), computed once for all the cell's attacks, targets and calibration audits."""
        if self.task != "classification":
            return {}
        obs, s, y = self.observations(), self.split(), self.features()["y"]
        return {"true_class": model_signals(obs["pool"], y[s["pool"]]),
                "population_true_class": model_signals(obs["test"], y[s["test"]])}

    def scores(self, attack: ComponentSpec, target: int) -> dict[str, np.ndarray]:
        return self._stage(
            "scores", self.scores_key(attack, target), "arrays",
            lambda: score_target(attack, self.audit(attack), target, self.calibration_models(target)),
            {"observations": self.observations_key, "attack": attack.as_dict(), "target": target},
        )

    def metrics(self, attack: ComponentSpec, target: int) -> dict[str, dict[str, Any]]:
        """What one attack measured on one target, by kind: ``utility`` (the target model's), ``facts`` (what the
        training reported), ``metrics`` (the attack's) and ``attack_facts`` (the diagnostics the attack reported)."""

        def compute() -> dict[str, dict[str, Any]]:
            scores = self.scores(attack, target)
            measured = target_metrics(scores, self.membership(), target, self.calibration_models(target),
                                      self.protocol["n_targets"])
            reported = {k.split("/", 1)[1] for k in scores if k.startswith("info/")}
            return {
                "utility": self.utility(target),
                "facts": self.training_info(),
                "metrics": {k: v for k, v in measured.items() if k not in reported},
                "attack_facts": {k: v for k, v in measured.items() if k in reported},
            }

        return self._stage(
            "metrics", self.metrics_key(attack, target), "json", compute,
            {"scores": self.scores_key(attack, target)},
        )

    def run(self) -> CellResult:
        """Every (attack, target) row of the cell, computing only the stages missing from the cache."""
        start = time.perf_counter()
        computed_before = sum(self.cache.misses.values())
        results: list[TargetResult] = []
        audited: list[AuditedRecords] = []
        has_rounds = self.cell.training_params.get("engine") == "federated"
        for attack in self.cell.attacks:
            component = ATTACKS.get(attack.name)
            servable = Servable(self.defense.releases, rounds=has_rounds, features=self.flat_features)
            reason = skip_reason(component, attack.kwargs, servable, task=self.task)
            access = component.tag("access", attack.kwargs, "black-box")
            knowledge = component.tag("knowledge", attack.kwargs, "references")
            for target in range(self.protocol["n_targets"]):
                if reason:
                    results.append(TargetResult(attack, target, access, knowledge, skipped=reason))
                    continue
                measured = self.metrics(attack, target)
                results.append(TargetResult(
                    attack, target, access, knowledge, utility=measured["utility"], facts=measured["facts"],
                    metrics=measured["metrics"], attack_facts=measured["attack_facts"],
                ))
                audited.append(self._audited(attack, target))
        unions = [self._union_result(union, target)
                  for union in self.cell.unions for target in range(self.protocol["n_targets"])]
        cached = sum(self.cache.misses.values()) == computed_before
        rows, samples = cell_rows(self.cell, results, unions), samples_table(self.cell, audited)
        return CellResult(self.cell, rows, samples, cached, healed=sum(self.cache.healed.values()),
                          computed=dict(self.cache.misses), timings=self.timings(time.perf_counter() - start))

    def timings(self, total: float) -> dict[str, StageTime]:
        """Each stage's :class:`StageTime`, and ``cell``: the whole cell's seconds (``total``), with the work
        outside the stages (rows, unions, samples) the difference to their sum."""
        stages = {stage: StageTime(seconds, self.cache.misses[stage], self.cache.hits[stage])
                  for stage, seconds in self.seconds.items()}
        return {**stages, "cell": StageTime(total, sum(self.cache.misses.values()), sum(self.cache.hits.values()))}

    def _union_result(self, union: Union, target: int) -> UnionResult:
        """The union's metrics on one target, from the cached scores of its attacks."""
        attacks = {a.label(): a for a in self.cell.attacks}
        scores = {label: self.scores(attacks[label], target) for label in union.attacks}
        metrics, _ = union_metrics(
            scores, self.membership(), target, self.calibration_models(target), union.max_fpr
        )
        return UnionResult(union, target, self.utility(target), metrics)

    def _audited(self, attack: ComponentSpec, target: int) -> AuditedRecords:
        """The records ``attack`` audited on ``target`` with their labels, membership and scores (records leaked
        to the attacker are marked not evaluated)."""
        s, scores = self.split(), self.scores(attack, target)
        return AuditedRecords(
            attack, target, records=s["pool"], labels=self.features()["y"][s["pool"]],
            member=self.membership()[target], scores=scores["target"],
            evaluated=scores.get("evaluated", np.ones(len(s["pool"]), dtype=bool)),
        )


def run_cell(cell: Cell, *, cache_dir: str, force: bool, device: str, strict: bool = False,
             on_stage: Callable[[str], None] | None = None) -> CellResult:
    """Run one cell in this process (the unit of work of every executor); ``on_stage`` is told the name of each
    stage as it starts (the in-process executor's progress bar)."""
    try:
        with warnings.catch_warnings(record=True) as caught:  # reported once by the driver, not over its progress bar
            warnings.simplefilter("always")
            result = CellRun(cell, Cache(cache_dir, force=force, strict=strict), device, on_stage).run()
        return dataclasses.replace(result, warnings=tuple(dict.fromkeys(map(warning_line, caught))))
    except (BenchError, stopping.Interrupted):
        raise
    except Exception as exc:
        raise CellFailed(f"cell {cell.label} failed: {type(exc).__name__}: {exc}") from exc


def warning_line(warning: warnings.WarningMessage) -> str:
    """``UserWarning (opacus): message``: a warning's category, the package that raised it, and its message."""
    parts = Path(warning.filename).parts
    source = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(warning.filename).stem
    return f"{warning.category.__name__} ({source}): {warning.message}"


class CellFailed(RuntimeError):
    """A cell raised while running; the other cells go on."""
