"""Points of the feasible set (:class:`bayesmix.data.constraints.Constraints`): its centre,
random feasible points, and the check that a returned mixture is feasible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.laws.solvers import project


def centre(constraints: Constraints) -> np.ndarray:
    """The feasible point closest to the uniform mixture (M,)."""
    m = len(constraints.domains)
    return project(np.full(m, 1.0 / m), constraints.lower, constraints.upper)


@renamed_kwargs(**SEED)
def feasible_points(constraints: Constraints, n: int, random_seed=0) -> np.ndarray:
    """``n`` feasible mixtures (n, M): uniform Dirichlet draws projected onto the feasible set
    (drawn with ``random_seed``)."""
    rng = np.random.default_rng(random_seed)
    m = len(constraints.domains)
    return project(rng.dirichlet(np.ones(m), size=n), constraints.lower, constraints.upper)


def ensure_feasible(r, constraints: Constraints, what: str = "mixture") -> np.ndarray:
    """Project ``r`` (..., M) onto the feasible set and verify it; raise if that failed."""
    x = project(r, constraints.lower, constraints.upper)
    ok = constraints.contains(x)
    if not np.all(ok):
        raise errors.InfeasibleError(
            f"{what} could not be made feasible (numerical failure)",
            hint="report this with the constraints used",
        )
    return x


def check_constraints(constraints: Constraints | None, train_domains: Sequence[str]) -> Constraints:
    """``constraints`` over ``train_domains`` (unconstrained when None); names must match."""
    train_domains = tuple(train_domains)
    if constraints is None:
        return Constraints.unconstrained(train_domains)
    if tuple(constraints.domains) != train_domains:
        raise errors.DomainNameError(
            f"constraints are over training domains ({', '.join(constraints.domains)}) but the "
            f"posterior's are ({', '.join(train_domains)})",
            hint="build the constraints with Constraints.build(posterior.train_domains, ...)",
        )
    return constraints
