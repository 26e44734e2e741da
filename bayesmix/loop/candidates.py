"""Candidates: the mixtures a batch is chosen from, with their planned size and cost.

Two kinds. A finite pool (:meth:`Candidates.pool`): rows of runs one could train, read from a
DataFrame or array, with optional planned model size ``n_params``, ``steps`` and ``tokens``;
rows outside the constraints are dropped with a note. A continuous cloud
(:meth:`Candidates.continuous`): scrambled Sobol points uniform on the feasible set and sparse
Dirichlet(0.3) points (both :func:`bayesmix.loop.design.initial_design`), the corners of the
box-simplex, and, given a belief, the per-draw optima, the posterior-mean optimum and Gaussian
perturbations around those optima (:func:`perturb`), all projected onto the feasible set.

Costs. When candidates differ in model size N (parameters) or training tokens D, a run's cost is
taken as proportional to N x D (steps stand in for tokens when tokens are absent), normalised so
the cheapest candidate costs 1 (:attr:`Candidates.cost`); every strategy trades value against
cost with the same ``cost_power`` (:mod:`bayesmix.loop.strategies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.feasible import check_constraints, ensure_feasible, feasible_points
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.laws.solvers import project
from bayesmix.loop import design

if TYPE_CHECKING:
    from bayesmix.loop.belief import Belief

#: Size of the continuous candidate cloud.
DEFAULT_CANDIDATES = 2048
#: Radii (sd of the Gaussian perturbation, in shares) of the points drawn around optima and,
#: in the score strategies' local refinement, around the best candidates.
REFINE_RADII = (0.01, 0.03, 0.1)


@dataclass(frozen=True)
class Candidates:
    """Mixtures a batch is chosen from: (N, M) in ``train_domains`` order.

    ``ids``: pool row ids (None for a generated cloud); ``n_params``, ``steps``, ``tokens``:
    per-candidate planned size and training amount (None when not given); ``constraints``: the
    feasible set of a continuous cloud (local refinement stays inside it; None for a pool);
    ``costs``: per-candidate costs set by the user (any positive unit; None: n_params x tokens).
    """

    mixtures: np.ndarray
    train_domains: tuple[str, ...]
    ids: tuple[str, ...] | None = None
    n_params: np.ndarray | None = None
    steps: np.ndarray | None = None
    tokens: np.ndarray | None = None
    constraints: Constraints | None = None
    notes: tuple[str, ...] = ()
    costs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.mixtures)

    @property
    def is_pool(self) -> bool:
        return self.constraints is None

    @property
    def cost(self) -> np.ndarray | None:
        """Relative cost per candidate (cheapest = 1): the ``costs`` given, else n_params x
        tokens (or steps); None when no candidate has a cost, size or training amount."""
        if self.costs is not None:
            costs = np.asarray(self.costs, float)
            return costs / costs.min()
        amount = self.tokens if self.tokens is not None else self.steps
        parts = [np.asarray(p, float) for p in (self.n_params, amount) if p is not None]
        if not parts:
            return None
        cost = np.prod(parts, axis=0)
        return cost / cost.min()

    @classmethod
    def pool(
        cls,
        pool,
        train_domains: Sequence[str],
        *,
        constraints: Constraints | None = None,
        source: str | None = None,
    ) -> Candidates:
        """A finite pool: a DataFrame (columns ``mix.<domain>`` or domain names, optional
        ``run``, ``n_params``, ``steps``, ``tokens``) or an array (N, M). Rows outside
        ``constraints`` are dropped (with a note); none left is an InfeasibleError."""
        from bayesmix.data.mixtures import as_mixtures

        train_domains = tuple(train_domains)
        extra = {}
        if isinstance(pool, pd.DataFrame):
            for col in ("n_params", "steps", "tokens"):
                if col in pool.columns:
                    values = pd.to_numeric(pool[col], errors="coerce").to_numpy(float)
                    if not np.all(np.isfinite(values) & (values > 0)):
                        row = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
                        raise errors.NonNumericError(
                            f"{col} must be a positive number in every row",
                            source=source,
                            row=row + 2,
                            column=col,
                        )
                    extra[col] = values
            if "step" in pool.columns and "steps" not in extra:
                raise errors.FormatError(
                    "a candidate pool names training amounts 'steps' (planned), not 'step'",
                    source=source,
                    column="step",
                )
        frame = as_mixtures(pool, train_domains, source=source)
        mix = frame.to_numpy(float)
        ids = tuple(frame.index)
        notes = []
        if constraints is not None:
            constraints = check_constraints(constraints, train_domains)
            inside = constraints.contains(mix)
            if not inside.any():
                raise errors.InfeasibleError(
                    "no pool mixture satisfies the constraints",
                    source=source,
                    hint="relax the constraints or add candidates",
                )
            if not inside.all():
                notes.append(
                    f"{int((~inside).sum())} of {len(mix)} pool mixtures violate the "
                    "constraints and were dropped"
                )
            mix, ids = mix[inside], tuple(np.asarray(ids, dtype=object)[inside])
            extra = {k: v[inside] for k, v in extra.items()}
        return cls(
            mix,
            train_domains,
            ids,
            extra.get("n_params"),
            extra.get("steps"),
            extra.get("tokens"),
            None,
            tuple(notes),
        )

    @classmethod
    @renamed_kwargs(**SEED)
    def continuous(
        cls,
        constraints: Constraints,
        n: int = DEFAULT_CANDIDATES,
        *,
        belief: Belief | None = None,
        random_seed: int | None = 0,
    ) -> Candidates:
        """A cloud of ~``n`` feasible mixtures (see the module docstring); with ``belief``, its
        per-draw optima, its posterior-mean optimum and points around them are included.
        Drawn with ``random_seed``."""
        if n < 1:
            raise errors.OptionError(f"the number of candidates must be >= 1, got {n}")
        m = len(constraints.domains)
        rng = np.random.default_rng(random_seed)
        parts = [
            _design_points(constraints, max(1, n // 2), random_seed, "sobol", 1.0),
            _design_points(constraints, max(1, n // 4), random_seed, "dirichlet", 0.3),
            project(np.eye(m), constraints.lower, constraints.upper),
        ]
        if belief is not None:
            check_constraints(constraints, belief.train_domains)
            optima = belief.optima(constraints)
            best = minimize_objective(
                belief.draws,
                constraints,
                belief.weights,
                "mean",
                n_starts=2,
                extra_starts=optima.mean(axis=0)[None],
                random_seed=random_seed,
            ).mixture
            centres = np.vstack([best[None], optima])
            n_local = max(0, n - sum(len(p) for p in parts))
            parts += [
                centres,
                perturb(
                    centres[rng.integers(0, len(centres), n_local)], constraints, rng, REFINE_RADII
                ),
            ]
        mix = ensure_feasible(np.vstack(parts), constraints, "candidate mixture")
        return cls(mix, tuple(constraints.domains), constraints=constraints)

    def select(self, index) -> Candidates:
        """The candidates at ``index`` (an int array), same kind."""
        index = np.asarray(index, int)

        def pick(a):
            return None if a is None else np.asarray(a)[index]

        ids = None if self.ids is None else tuple(np.asarray(self.ids, dtype=object)[index])
        return Candidates(
            self.mixtures[index],
            self.train_domains,
            ids,
            pick(self.n_params),
            pick(self.steps),
            pick(self.tokens),
            self.constraints,
            self.notes,
            pick(self.costs),
        )

    def extended(self, mixtures: np.ndarray) -> Candidates:
        """This cloud plus ``mixtures`` (continuous candidates only)."""
        if self.is_pool:
            raise errors.DesignError("a finite pool cannot be extended")
        assert self.constraints is not None  # continuous clouds are built from constraints
        mix = ensure_feasible(
            np.vstack([self.mixtures, mixtures]), self.constraints, "candidate mixture"
        )
        return Candidates(mix, self.train_domains, constraints=self.constraints, notes=self.notes)


def _design_points(constraints, n, random_seed, method, alpha) -> np.ndarray:
    """``n`` feasible points from design.initial_design (no distance guard); projected
    Dirichlet points when the box leaves a single mixture or is too tight to fill."""
    try:
        return design.initial_design(
            constraints,
            n,
            random_seed=random_seed,
            method=method,
            alpha=alpha,
            min_distance=0.0,
            max_candidates=max(20_000, 4 * n),
        )
    except errors.DesignError:
        return feasible_points(constraints, n, random_seed)


def perturb(centres: np.ndarray, constraints: Constraints, rng, radii) -> np.ndarray:
    """Gaussian perturbations of ``centres`` (n, M) in the simplex's plane, radius cycling
    through ``radii``, projected onto the feasible set."""
    if len(centres) == 0:
        return np.empty((0, len(constraints.domains)))
    step = rng.standard_normal(centres.shape)
    step -= step.mean(axis=1, keepdims=True)
    scale = np.resize(np.asarray(radii, float), len(centres))[:, None]
    return project(centres + scale * step, constraints.lower, constraints.upper)
