"""The Law interface: the one place a mixing law is defined.

A law is a subclass of :class:`Law` in one file under ``bayesmix/laws/`` (or anywhere, passed to
:func:`bayesmix.laws.register`). It declares

* ``name`` (what a specification's ``law = "..."`` says) and a one-line ``description``;
* ``params``: its parameters (role ``"law"``: what :meth:`Law.mean` takes) with their dims
  (``eval_domain``, its own :attr:`Law.extra_dims`, ``train_domain``), units and meaning - the
  names under which the posterior stores them, and what the report and ``bayesmix diagnose``
  show; ``derived``: documented functions of them it also stores and shows (role
  ``"derived"``, e.g. M4's ``c`` and ``k``). Every other variable its PyMC block creates is a
  sampler variable (hyperparameters, reparameterisations), stored apart;
* ``extra_dims``: dims of its own between ``eval_domain`` and ``train_domain`` (e.g.
  ``implicit``'s ``latent``), each sized by the specification's ``hierarchy`` key of that name;
* ``inputs``: what a loss depends on: the mixture ``"r"`` always, and optionally the model size
  ``"n_params"`` (parameters) and the training amount ``"tokens"`` (the nested pipeline's curve
  laws, :mod:`bayesmix.laws.curve`, declare :data:`CURVE_INPUTS` instead of a mixture);
* ``priors``: its default priors (a specification may override any of them by name);
  ``min_runs``: the fewest runs :func:`bayesmix.fit` accepts for it;
* :meth:`Law.build`: its parameter block in the PyMC model (hierarchy, reparameterisation);
* :meth:`Law.mean`: the mean loss, written once with ``xp`` = ``numpy`` or ``pytensor.tensor``;
* optionally :meth:`Law.value_grad` (the weighted loss and its gradient in r; the default
  compiles the PyTensor gradient of :meth:`Law.mean` once) and :meth:`Law.draw_optima` (an exact
  fast per-draw optimiser, as M4 has); ``convex = True`` when ``sum_i w_i L_i(r)`` is convex in r
  for every draw (one start is then enough).

Everything else - fitting, prediction, choosing a mixture, acquisition - works from these and
never names a law. Shapes: ``r`` (..., n, M); a parameter with dims (eval_domain,) has shape
(..., K), with (eval_domain, train_domain) (..., K, M); ``n_params``/``tokens`` (..., n); the mean
(..., n, K) in the loss's units (nats per token). Leading dims (draws) broadcast.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

#: Inputs a mixing law may declare. ``r`` is always required.
INPUTS = ("r", "n_params", "tokens")
#: What each input is, for messages.
INPUT_MEANING = {
    "r": "the mixture's shares",
    "n_params": "the model size in parameters",
    "tokens": "the training tokens",
}
#: The dims every law's parameters may have: a law's :attr:`Law.extra_dims` go between them.
DOMAIN_DIMS = ("eval_domain", "train_domain")
#: What a parameter is to its law: ``"law"`` (an argument of :meth:`Law.mean`) or ``"derived"``
#: (a documented function of those). Both are stored in the posterior and shown by the report
#: and ``bayesmix diagnose``; every other variable of the law's block is a sampler variable.
Role = Literal["law", "derived"]
ROLES: tuple[Role, ...] = ("law", "derived")
#: Inputs a curve law of the nested pipeline (:mod:`bayesmix.laws.curve`) declares instead of a
#: mixture: ``log_ratio`` (log of its reference step or size over the point's) and, for the
#: step law, ``anneal`` (the point's annealing area S2 over the reference).
CURVE_INPUTS = ("log_ratio", "anneal")


@dataclass(frozen=True)
class Param:
    """A law parameter: its name in the posterior, dims, units, meaning and role.

    ``signed``: its values take both signs around a meaningful 0 (e.g. M4's slopes ``t``: < 0
    helps), so plots centre their colour scale there."""

    name: str
    dims: tuple[str, ...] = ("eval_domain",)
    units: str = ""
    description: str = ""
    role: Role = "law"
    signed: bool = False

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"parameter {self.name!r}: role must be one of {ROLES}")
        if len(set(self.dims)) < len(self.dims):
            raise ValueError(f"parameter {self.name!r}: dims repeat, got {self.dims}")


@dataclass
class BuildContext:
    """What a law's PyMC block may use (inside the ``pm.Model`` context).

    ``priors``: the specification's resolved priors by name; ``hierarchy``: its hierarchy table
    (``diagonal``, ``parameterization``); ``train_domains``/``eval_domains``: names;
    ``diagonal``: (K, M) 0/1 mask of validation domains that match a training domain (None when
    the diagonal effect is off or nothing matches); ``loss_mean``/``loss_scale``: ``pm.Data`` (K,)
    per validation domain, the mean observed loss and a scale of its spread (for priors given as
    ``"data"``); ``inputs``: ``pm.Data`` of the law's inputs per run (``r`` (run, M), ...).
    """

    priors: Mapping
    hierarchy: Mapping
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    diagonal: np.ndarray | None
    loss_mean: object
    loss_scale: object
    inputs: Mapping = field(default_factory=dict)

    @property
    def centered(self) -> bool:
        return self.hierarchy.get("parameterization", "centered") == "centered"

    def prior(self, name: str, dims=None, **data):
        """Create the variable ``name`` from its prior; ``data`` fills ``"data"`` parameters."""
        return self.priors[name].create(name, dims=dims, data=data or None)


class Law(abc.ABC):
    """Base class of a mixing law (see the module docstring). Subclasses set the class
    attributes and implement :meth:`mean` and :meth:`build`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: What the loss depends on (a subset of :data:`INPUTS`, always with ``"r"``).
    inputs: ClassVar[tuple[str, ...]] = ("r",)
    #: Parameters stored in the posterior and passed to :meth:`mean` (role ``"law"``).
    params: ClassVar[tuple[Param, ...]] = ()
    #: Documented functions of the parameters, stored and shown with them (role ``"derived"``).
    derived: ClassVar[tuple[Param, ...]] = ()
    #: Dims of the law's own between ``eval_domain`` and ``train_domain`` (e.g. ``"latent"``),
    #: each sized by the specification's hierarchy key of the same name.
    extra_dims: ClassVar[tuple[str, ...]] = ()
    #: Dims before ``eval_domain`` (the pipeline's curve laws: ``curve``, ``group``); none for a
    #: mixing law.
    lead_dims: ClassVar[tuple[str, ...]] = ()
    #: Hierarchy keys of the law's own that hold a table of names (e.g. ``tasks``' families),
    #: checked by the specification as name -> name.
    hierarchy_keys: ClassVar[tuple[str, ...]] = ()
    #: Size of each extra dim when the specification's hierarchy does not set it.
    extra_dim_defaults: ClassVar[Mapping[str, int]] = {}
    #: Default priors: name -> ``{"dist": ..., <parameters>}`` (see :mod:`bayesmix.model.priors`).
    priors: ClassVar[Mapping[str, Mapping]] = {}
    #: The shipped specification (``models/<model>.toml``) that fits this law by default.
    model: ClassVar[str] = ""
    #: True when ``sum_i w_i L_i(r)`` is convex in r for every draw (w >= 0).
    convex: ClassVar[bool] = False
    #: Name of a parameter that equals the mean loss at the uniform mixture (e.g. M4's ``m``),
    #: or None when the law has none; tests check the promise for every law that makes it.
    uniform_loss_param: ClassVar[str | None] = None
    #: Inputs the law reads only as the run's budget, not as a scale it extrapolates in (e.g.
    #: ``tokens`` of a law on effective shares under repetition, :mod:`bayesmix.laws.repetition`):
    #: such a law is fitted to one record per run, and a target beyond the fitted range of these
    #: inputs is not an extrapolation.
    budget_inputs: ClassVar[tuple[str, ...]] = ()
    #: Fewest runs :func:`bayesmix.fit` accepts (fewer: ``TooFewRunsError``): below it the law
    #: is barely identified.
    min_runs: ClassVar[int] = 2
    #: True when :meth:`build` honours ``hierarchy.parameterization`` (centred or noncentred
    #: pooling, :attr:`BuildContext.centered`): the gate driver then answers divergences of a
    #: centred fit with the noncentred form.
    has_noncentered: ClassVar[bool] = False
    #: nutpie's mass-matrix adaptation :func:`bayesmix.fit` uses for this law unless told
    #: ("low_rank" or "diag"): a law whose sampled block is already whitened gains no steps
    #: from the low-rank estimate and pays its tuning cost.
    adaptation: ClassVar[str] = "low_rank"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.check_declaration()

    def __init__(self):
        self._compiled = None
        self._lock = threading.Lock()

    @classmethod
    def check_declaration(cls) -> None:
        """Refuse (ValueError) parameters whose dims or role do not fit the declaration: dims
        a subsequence of :attr:`dims`, ``params`` of role "law", ``derived`` of role
        "derived", no name twice."""
        order = cls.dims_of_law()
        for role, group in (("law", cls.params), ("derived", cls.derived)):
            for p in group:
                if p.role != role:
                    raise ValueError(
                        f"law {cls.name!r}: parameter {p.name!r} must have role {role!r}"
                    )
                known = [d for d in p.dims if d in order]
                if len(known) < len(p.dims) or known != sorted(known, key=order.index):
                    raise ValueError(
                        f"law {cls.name!r}: parameter {p.name!r} dims must be a subsequence of "
                        f"{order}, got {p.dims}"
                    )
        names = [p.name for p in (*cls.params, *cls.derived)]
        if len(set(names)) < len(names):
            raise ValueError(f"law {cls.name!r}: a parameter name repeats in {names}")

    @classmethod
    def dims_of_law(cls) -> tuple[str, ...]:
        """Every dim the law's parameters may have, in array order."""
        return (*cls.lead_dims, DOMAIN_DIMS[0], *cls.extra_dims, DOMAIN_DIMS[1])

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def mean(self, inputs: Mapping, params: Mapping, xp=np):
        """Mean loss (..., n, K) of ``inputs`` (``r`` (..., n, M), ...) under ``params``."""

    @abc.abstractmethod
    def build(self, ctx: BuildContext) -> dict:
        """Create the law's parameters in the current PyMC model; return them by name.

        Every name in :attr:`params` and :attr:`derived` must be a model variable (free or
        ``pm.Deterministic``) with the dims it declares, so the posterior stores it.
        """

    # ------------------------------------------------------------------ derived
    @property
    def dims(self) -> tuple[str, ...]:
        """``("eval_domain", *extra_dims, "train_domain")``: the order of a parameter's axes."""
        return self.dims_of_law()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def shown(self) -> tuple[Param, ...]:
        """The parameters the posterior stores and the report and ``diagnose`` show:
        :attr:`params`, then :attr:`derived`."""
        return (*self.params, *self.derived)

    @property
    def shown_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.shown)

    def param(self, name: str) -> Param:
        for p in self.shown:
            if p.name == name:
                return p
        raise KeyError(name)

    def effect_matrix(self) -> Param | None:
        """The first (eval_domain, train_domain) parameter: how training domain j moves
        validation loss i (M4's slopes ``t``, powershare's weights ``w``), or None."""
        return next((p for p in self.params if p.dims == DOMAIN_DIMS), None)

    def dim_sizes(self, hierarchy: Mapping) -> dict[str, int]:
        """Size of each extra dim under a specification's ``hierarchy`` table."""
        return {
            d: int(hierarchy.get(d, self.extra_dim_defaults.get(d, 1))) for d in self.extra_dims
        }

    def predict(self, r, params, *, n_params=None, tokens=None, xp=np):
        """:meth:`mean` with the inputs given separately (NumPy by default)."""
        return self.mean(self.make_inputs(r, n_params=n_params, tokens=tokens), params, xp)

    def make_inputs(self, r, *, n_params=None, tokens=None) -> dict:
        """The inputs dict of :meth:`mean`; checks that every declared input is given."""
        from bayesmix.errors import OptionError

        out = {"r": r}
        given = {"n_params": n_params, "tokens": tokens}
        for key in self.inputs:
            if key == "r":
                continue
            if given[key] is None:
                raise OptionError(
                    f"law {self.name!r} needs {key}= to predict a loss",
                    hint=INPUT_MEANING[key],
                    param=key,
                )
            out[key] = given[key]
        return out

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Weighted loss ``f = sum_i w_i L_i(r)`` (S, n) and its gradient in r (S, n, M).

        ``r`` (S, n, M) (one set of mixtures per draw, or (n, M) shared), ``params`` with a
        leading draw axis S, ``weights`` (K,). The default compiles PyTensor's gradient of
        :meth:`mean` once per law (laws with a cheap analytic gradient override this).
        """
        r = np.asarray(r, float)
        s = _n_draws(self, params)
        if r.ndim == 2:
            r = np.broadcast_to(r, (s,) + r.shape)
        fn = self._value_grad_fn()
        args = [np.ascontiguousarray(r), np.asarray(weights, float)]
        args += [np.asarray(params[p], float) for p in self.param_names]
        extra = {"n_params": n_params, "tokens": tokens}
        for key in self.inputs:
            if key != "r":
                args.append(np.broadcast_to(np.asarray(extra[key], float), r.shape[:-1]).copy())
        f, g = fn(*args)
        return np.asarray(f), np.asarray(g)

    def _value_grad_fn(self):
        with self._lock:
            if self._compiled is None:
                import pytensor
                import pytensor.tensor as pt

                r = pt.tensor3("r")
                w = pt.vector("w")
                ps = {
                    p.name: pt.tensor(p.name, shape=(None,) * (1 + len(p.dims)))
                    for p in self.params
                }
                inputs = {"r": r}
                extra = []
                for key in self.inputs:
                    if key != "r":
                        inputs[key] = pt.matrix(key)
                        extra.append(inputs[key])
                f = (self.mean(inputs, ps, pt) * w).sum(axis=-1)  # (S, n)
                g = pytensor.grad(f.sum(), r)
                self._compiled = pytensor.function(
                    [r, w, *ps.values(), *extra], [f, g], on_unused_input="ignore"
                )
            return self._compiled

    def data_arrays(self, r, losses, loss_mean, loss_scale) -> Mapping[str, np.ndarray]:
        """Arrays the law's PyMC block derives from the data, by ``pm.Data`` name (default
        none): :func:`bayesmix.model.model.build_model` creates them as ``pm.Data`` in
        ``ctx.inputs`` and every refit refreshes them, so a compiled model stays valid. Inputs:
        ``r`` (record, train_domain) shares, ``losses`` (record, eval_domain) with NaN where
        missing, ``loss_mean`` and ``loss_scale`` (eval_domain). E.g. m4log's whitening matrix
        and chains' start."""
        return {}

    def table_arrays(self, runs) -> Mapping[str, np.ndarray]:
        """Arrays the law reads from the run table (a :class:`bayesmix.RunTable`) beyond its
        inputs, by ``pm.Data`` name (default none), e.g. the repetition component's unique
        tokens per training domain; a missing column is a FormatError naming it."""
        return {}

    def epochs(self, r, params: Mapping, inputs: Mapping) -> np.ndarray | None:
        """Passes over each training domain's unique data (n, M) of mixtures ``r`` (n, M) at
        the fixed ``inputs``, for a law that knows them (the repetition component); None
        otherwise."""
        return None

    def draw_optima(self, params, weights, lower, upper, x0=None, **inputs):
        """Exact per-draw optima (r (S, M), converged (S,)) or None when the law has no fast
        path (then :mod:`bayesmix.decisions.optimize` uses batched projected gradients). ``inputs``:
        the
        law's fixed extra inputs (``n_params``, ``tokens``) when it takes any."""
        return None

    def describe_params(self) -> str:
        """One line per parameter: name [dims] units - meaning."""
        return "\n".join(
            f"{p.name} [{', '.join(p.dims)}] {p.units}: {p.description}" for p in self.params
        )

    def __repr__(self) -> str:
        return f"<law {self.name!r}: {self.description}>"

    def __getstate__(self):
        # the compiled gradient and its lock cannot be pickled; they are rebuilt on demand
        return {k: v for k, v in self.__dict__.items() if k not in ("_compiled", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._compiled = None
        self._lock = threading.Lock()


def _n_draws(law: Law, params: Mapping) -> int:
    first = np.asarray(params[law.param_names[0]])
    return first.shape[0]


#: Laws made by :func:`component_law`, by name, so a component of one base is made once.
_COMPONENT_LAWS: dict[str, Law] = {}


def component_law[C: Law](kind: type[C], base: Law, suffix: str, **changes) -> C:
    """``base`` with a law component (``+absent``, ``+repeat``, ``+phases``): an instance of a
    subclass of ``kind`` named ``base.name + suffix``, which has the base's attributes (inputs,
    parameters, dims, priors, ``min_runs``, form) except ``changes`` and no model file of its
    own, and holds ``base`` as ``.base``. Made once per (name, base type)."""
    name = base.name + suffix
    made = _COMPONENT_LAWS.get(name)
    if isinstance(made, kind) and type(getattr(made, "base", None)) is type(base):
        return made
    attrs = {
        "name": name,
        "inputs": base.inputs,
        "budget_inputs": base.budget_inputs,
        "params": base.params,
        "derived": base.derived,
        "extra_dims": base.extra_dims,
        "extra_dim_defaults": base.extra_dim_defaults,
        "priors": base.priors,
        "model": "",
        "convex": base.convex,
        "uniform_loss_param": base.uniform_loss_param,
        "min_runs": base.min_runs,
        "has_noncentered": base.has_noncentered,
        **changes,
    }
    law = type(f"{type(base).__name__}{kind.__name__.removesuffix('Law')}", (kind,), attrs)()
    law.base = base  # type: ignore[attr-defined]
    _COMPONENT_LAWS[name] = law
    return law
