"""The Law interface: the one place a mixing law is defined.

A law is a subclass of :class:`Law` in one file under ``bayesmix/laws/`` (or anywhere, passed to
:func:`bayesmix.laws.register`). It declares

* ``name`` (what a specification's ``law = "..."`` says) and a one-line ``description``;
* ``params``: its parameters with their dims (``eval_domain``, ``train_domain``), units and
  meaning - the names under which the posterior stores them;
* ``inputs``: what a loss depends on: the mixture ``"r"`` always, and optionally the model size
  ``"n_params"`` (parameters) and the training amount ``"tokens"`` (the nested pipeline's curve
  laws, :mod:`bayesmix.laws.curve`, declare :data:`CURVE_INPUTS` instead of a mixture);
* ``priors``: its default priors (a specification may override any of them by name);
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

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: Inputs a mixing law may declare. ``r`` is always required.
INPUTS = ("r", "n_params", "tokens")
#: Inputs a curve law of the nested pipeline (:mod:`bayesmix.laws.curve`) declares instead:
#: ``log_ratio`` (log of its reference step or size over the point's) and, for the step law,
#: ``anneal`` (the point's annealing area S2 over the reference).
CURVE_INPUTS = ("log_ratio", "anneal")
#: Dims a parameter may have (in this order); ``curve`` and ``group`` are the curve laws'.
PARAM_DIMS = ("curve", "group", "eval_domain", "latent", "train_domain")


@dataclass(frozen=True)
class Param:
    """A law parameter: its name in the posterior, dims, units and meaning."""

    name: str
    dims: tuple[str, ...] = ("eval_domain",)
    units: str = ""
    description: str = ""

    def __post_init__(self):
        if any(d not in PARAM_DIMS for d in self.dims) or list(self.dims) != sorted(
            self.dims, key=PARAM_DIMS.index
        ):
            raise ValueError(
                f"parameter {self.name!r}: dims must be a subsequence of "
                f"{PARAM_DIMS}, got {self.dims}"
            )


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


class Law:
    """Base class of a mixing law (see the module docstring). Subclasses set the class
    attributes and implement :meth:`mean` and :meth:`build`."""

    name: str = ""
    description: str = ""
    #: What the loss depends on (a subset of :data:`INPUTS`, always with ``"r"``).
    inputs: tuple[str, ...] = ("r",)
    #: Parameters stored in the posterior and passed to :meth:`mean`.
    params: tuple[Param, ...] = ()
    #: Default priors: name -> ``{"dist": ..., <parameters>}`` (see :mod:`bayesmix.model.priors`).
    priors: Mapping[str, Mapping] = {}
    #: True when ``sum_i w_i L_i(r)`` is convex in r for every draw (w >= 0).
    convex: bool = False
    #: Name of a parameter that equals the mean loss at the uniform mixture (e.g. M4's ``m``),
    #: or None when the law has none; tests check the promise for every law that makes it.
    uniform_loss_param: str | None = None
    #: Fewest runs a fit should have (fewer: the fit warns that the law is barely identified).
    min_runs: int = 2
    #: True when :meth:`build` honours ``hierarchy.parameterization`` (centred or noncentred
    #: pooling, :attr:`BuildContext.centered`): the gate driver then answers divergences of a
    #: centred fit with the noncentred form.
    has_noncentered: bool = False

    def __init__(self):
        self._compiled = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ to implement
    def mean(self, inputs: Mapping, params: Mapping, xp=np):
        """Mean loss (..., n, K) of ``inputs`` (``r`` (..., n, M), ...) under ``params``."""
        raise NotImplementedError

    def build(self, ctx: BuildContext) -> dict:
        """Create the law's parameters in the current PyMC model; return them by name.

        Every name in :attr:`params` must be a model variable (free or ``pm.Deterministic``)
        with the dims it declares, so the posterior stores it.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ derived
    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

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
                    f"law {self.name!r} needs {key} to predict a loss",
                    hint=f"give {key}= (CLI: --{key.replace('_', '-')})",
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
