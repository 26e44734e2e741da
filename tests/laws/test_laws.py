"""Contract tests of every registered law (:func:`bayesmix.laws.available_laws`), no MCMC.

Parameters come from prior draws of each law's own PyMC block (built by
:func:`bayesmix.model.model.build_model` from a shipped specification of that law), so every law is
tested at parameter values its priors consider plausible. Domains: 4 training, 3 validation
(K != M catches transposed parameters), two of the validation names match training domains so
the diagonal effect is on. The nested pipeline's curve laws (step, size) take no mixture, so the
registry leaves them out; tests/laws/test_curve.py checks them.
"""

from __future__ import annotations

import functools

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bayesmix.laws import DEFAULT_LAW, Law, Param, available_laws, get_law, model_with
from bayesmix.model.model import build_model, prepare_data
from bayesmix.model.simulation import simulate
from bayesmix.model.spec import available_models, load_spec

LAWS = sorted(available_laws())
TRAIN = ("Github", "Books3", "Pile-CC", "ArXiv")
EVAL = ("Github", "Pile-CC", "Wikipedia")
#: Prior draws per law (enough to reach the tails of the priors in the bound test).
N_DRAWS = 200


# ---------------------------------------------------------------------------------- helpers
def specs_of(law_name: str) -> list[str]:
    """Shipped specifications that use the law."""
    return [name for name in available_models() if load_spec(name).law == law_name]


def extra_inputs(law, n: int, rng) -> dict:
    """Model size / tokens for laws that take them (70M-1B parameters, 1-30B tokens)."""
    out = {}
    if "n_params" in law.inputs:
        out["n_params"] = rng.uniform(7e7, 1e9, n)
    if "tokens" in law.inputs:
        out["tokens"] = rng.uniform(1e9, 3e10, n)
    return out


@functools.cache
def built(law_name: str):
    """(spec, run table, pm.Model) of the law's first shipped specification on 12 simulated
    runs (sizes and steps only when the law takes them)."""
    law = get_law(law_name)
    kw = {}
    if "n_params" in law.inputs:
        kw["sizes"] = [7e7, 1.6e8]
    if "tokens" in law.inputs:
        kw["steps"] = [1000, 2000]
    runs, _ = simulate(list(TRAIN), list(EVAL), 12, random_seed=0, **kw)
    spec = load_spec(specs_of(law_name)[0])
    model = build_model(spec, runs.train_domains, runs.eval_domains, prepare_data(runs, law))
    return spec, runs, model


@functools.cache
def prior_params(law_name: str) -> dict[str, np.ndarray]:
    """Prior draws of the law's parameters (leading draw axis), at most N_DRAWS.

    Only physical draws are kept: every loss at the uniform mixture positive. The level priors
    are data-scaled Normals (``m ~ Normal(mean loss, 2 x spread)``), whose far tail goes below
    0 on a small table; a posterior never goes there, and no law promises anything for it.
    """
    law = get_law(law_name)
    _, _, model = built(law_name)
    draws = pm.draw([model[p] for p in law.param_names], draws=N_DRAWS, random_seed=1)
    params = {p: np.asarray(v, float) for p, v in zip(law.param_names, draws, strict=True)}
    uniform = np.full((1, len(TRAIN)), 1.0 / len(TRAIN))
    extra = {k: v[:1] for k, v in extra_inputs(law, 1, np.random.default_rng(0)).items()}
    ok = np.all(law.predict(uniform, params, **extra)[:, 0, :] > 0, axis=-1)
    assert ok.mean() > 0.8, "most prior draws should give positive losses"
    return {p: v[ok] for p, v in params.items()}


def some_params(law_name: str, s: int) -> dict[str, np.ndarray]:
    return {k: v[:s] for k, v in prior_params(law_name).items()}


def random_mixtures(rng, shape, n_train: int, zero_fraction: float = 0.3) -> np.ndarray:
    """Dirichlet(1) mixtures with about ``zero_fraction`` of the shares set exactly to 0."""
    g = rng.gamma(1.0, 1.0, (*shape, n_train))
    g[rng.random(g.shape) < zero_fraction] = 0.0
    g[..., 0] += 1e-3  # never an all-zero row
    return g / g.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------- specs
def test_new_law_specs_load_by_name():
    for name in ("powershare", "additive"):
        spec = load_spec(name)
        assert spec.name == name and spec.law == name
        assert set(get_law(name).priors) <= set(spec.priors)


@pytest.mark.parametrize("law_name", LAWS)
def test_every_law_has_a_shipped_spec(law_name):
    names = specs_of(law_name)
    assert names, f"no models/*.toml uses law {law_name!r}"
    for name in names:
        assert load_spec(name).name == name


@pytest.mark.parametrize("law_name", LAWS)
def test_declarations_are_consistent(law_name):
    law = get_law(law_name)
    assert law.description and "r" in law.inputs
    assert len(set(law.param_names)) == len(law.param_names)
    assert "sigma" not in law.shown_names  # the noise scale's name in every posterior
    for p in law.shown:
        assert p.description, p.name
    assert [p.role for p in law.params] == ["law"] * len(law.params)
    assert [p.role for p in law.derived] == ["derived"] * len(law.derived)
    if law.model:  # the shipped specification that fits it by default
        assert load_spec(law.model).law == law_name


def test_the_law_base_is_abstract_and_checks_its_declaration():
    class NoBlock(Law):
        name = "no-block-test"
        params = (Param("m"),)

        def mean(self, inputs, params, xp=np):
            return params["m"][..., None, :]

    with pytest.raises(TypeError, match="build"):
        NoBlock()
    with pytest.raises(ValueError, match="dims must be a subsequence"):

        class Undeclared(NoBlock):  # a dim of its own, not declared in extra_dims
            params = (Param("s", ("eval_domain", "latent")),)

    with pytest.raises(ValueError, match="must have role 'derived'"):

        class Mislabelled(NoBlock):
            derived = (Param("c"),)

    class Declared(NoBlock):
        extra_dims = ("latent",)
        params = (Param("s", ("eval_domain", "latent")),)

    assert Declared.dims_of_law() == ("eval_domain", "latent", "train_domain")
    assert Declared.extra_dim_defaults == {}


def test_registry_defaults_name_laws_by_what_they_declare():
    assert get_law(DEFAULT_LAW).name == DEFAULT_LAW
    latent = load_spec(model_with(dim="latent"))
    assert "latent" in get_law(latent.law).extra_dims
    joint = load_spec(model_with(takes="tokens"))
    assert {"n_params", "tokens"} <= set(get_law(joint.law).inputs)
    assert get_law("m4").effect_matrix().name == "t" and get_law("m4").effect_matrix().signed
    assert not get_law("powershare").effect_matrix().signed
    assert get_law("implicit").effect_matrix() is None  # its t has a latent dim


# ---------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("law_name", LAWS)
def test_model_builds_with_the_declared_dims(law_name):
    law = get_law(law_name)
    _, runs, model = built(law_name)
    sizes = {d: len(model.coords[d]) for d in law.extra_dims}
    sizes.update(eval_domain=len(runs.eval_domains), train_domain=len(runs.train_domains))
    params = some_params(law_name, 1)
    for p in law.params:
        assert model.named_vars_to_dims.get(p.name, ()) == p.dims, p.name  # scalars: no dims
        assert params[p.name].shape[1:] == tuple(sizes[d] for d in p.dims), p.name
    for p in law.derived:
        assert model.named_vars_to_dims.get(p.name, ()) == p.dims, p.name


# ---------------------------------------------------------------------------------- the mean
@pytest.mark.parametrize("law_name", LAWS)
def test_numpy_and_pytensor_means_agree(law_name):
    law = get_law(law_name)
    rng = np.random.default_rng(2)
    params = some_params(law_name, 5)
    r = random_mixtures(rng, (5, 7), len(TRAIN))
    inputs = {"r": r, **extra_inputs(law, 7, rng)}
    sym = {p: pt.tensor(p, shape=(None,) * v.ndim) for p, v in params.items()}
    sym_in = {k: pt.tensor(k, shape=(None,) * np.ndim(v)) for k, v in inputs.items()}
    fn = pytensor.function([*sym.values(), *sym_in.values()], law.mean(sym_in, sym, pt))
    got = fn(*params.values(), *inputs.values())
    want = law.mean(inputs, params, np)
    assert want.shape == (5, 7, len(EVAL))
    assert np.all(np.isfinite(want))
    # same float64 formula, different operation order: agreement to ~1e-15 relative; 1e-10
    # leaves room for fused / reordered ops without hiding a wrong formula
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("law_name", LAWS)
def test_mean_at_the_uniform_mixture(law_name):
    """Laws that declare ``uniform_loss_param`` promise L(uniform) = that parameter."""
    law = get_law(law_name)
    name = getattr(law, "uniform_loss_param", None)
    if name is None:
        pytest.skip(f"law {law_name!r} does not declare uniform_loss_param")
    params = some_params(law_name, 20)
    r = np.full((1, len(TRAIN)), 1.0 / len(TRAIN))
    loss = law.predict(r, params, **extra_inputs(law, 1, np.random.default_rng(0)))
    np.testing.assert_allclose(loss[:, 0, :], params[name], rtol=1e-12)


@pytest.mark.parametrize("law_name", LAWS)
def test_value_grad_matches_finite_differences(law_name):
    law = get_law(law_name)
    rng = np.random.default_rng(3)
    s, n, m = 4, 6, len(TRAIN)
    params = some_params(law_name, s)
    extra = extra_inputs(law, n, rng)
    v = rng.dirichlet(np.ones(len(EVAL)))
    r = random_mixtures(rng, (s, n), m)

    def f(x):
        return (law.mean(law.make_inputs(x, **extra), params) * v).sum(-1)

    val, grad = law.value_grad(r, params, v, **extra)
    assert val.shape == (s, n) and grad.shape == (s, n, m)
    np.testing.assert_allclose(val, f(r), rtol=1e-12)
    # Central differences with h = 1e-6 (every law is smooth for r_j >= -h: shares enter
    # linearly or shifted by an EPS >= 1e-3): truncation error h^2 f''' / 6 and rounding error about
    # 1e-16 |f| / h = 1e-9 relative, so 1e-5 relative (plus 1e-6 of the largest component, for
    # entries near 0) separates a right gradient from a wrong one by orders of magnitude.
    h = 1e-6
    fd = np.empty_like(grad)
    for j in range(m):
        e = np.zeros(m)
        e[j] = h
        fd[..., j] = (f(r + e) - f(r - e)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    # one set of mixtures shared by every draw: the same numbers
    val2, grad2 = law.value_grad(r[0], params, v, **extra)
    np.testing.assert_allclose(val2[0], val[0], rtol=1e-12)
    np.testing.assert_allclose(grad2[0], grad[0], rtol=1e-10)


@pytest.mark.parametrize("law_name", LAWS)
def test_convex_laws_are_midpoint_convex(law_name):
    law = get_law(law_name)
    if not law.convex:
        pytest.skip(f"law {law_name!r} does not claim convexity")
    rng = np.random.default_rng(4)
    params = prior_params(law_name)
    s = len(next(iter(params.values())))
    a = random_mixtures(rng, (s, 20), len(TRAIN), zero_fraction=0.5)
    b = random_mixtures(rng, (s, 20), len(TRAIN), zero_fraction=0.5)
    v = rng.dirichlet(np.ones(len(EVAL)))
    extra = extra_inputs(law, 20, rng)

    def f(x):
        return (law.mean(law.make_inputs(x, **extra), params) * v).sum(-1)

    gap = (f(a) + f(b)) / 2 - f((a + b) / 2)
    # float64 rounding of losses of a few nats: 1e-12 absolute
    assert gap.min() >= -1e-12


# ---------------------------------------------------------------------------------- zero shares
#: Laws whose prior draws are known to break the bound (reported, not fixed here): M4's
#: t = b / rho is unbounded as rho -> 0, so exp(t . r) at a corner reaches 1e10 (m4) and, with
#: the log-share term, 1e41 (m4log) for a few prior draws; about half the draws exceed 10 x.
#: scaling: M4 on the reducible loss; tasks: M4 per downstream task.
UNBOUNDED = {"m4", "m4log", "scaling", "implicit", "tasks"}


@pytest.mark.parametrize(
    "law_name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                name in UNBOUNDED, strict=True, reason="exponential law, unbounded prior"
            ),
        )
        for name in LAWS
    ],
)
def test_losses_at_zero_shares_stay_bounded(law_name):
    """What a zero share can do must be bounded (laws predict unseen mixtures). Corners (one
    domain only), each domain left out, and sparse mixtures stay below 10 x the uniform-mixture
    loss for every prior draw."""
    law = get_law(law_name)
    m = len(TRAIN)
    rng = np.random.default_rng(5)
    corners = np.eye(m)
    left_out = (1.0 - np.eye(m)) / (m - 1)
    sparse = random_mixtures(rng, (50,), m, zero_fraction=0.6)
    r = np.concatenate([corners, left_out, sparse])
    params = prior_params(law_name)
    extra = extra_inputs(law, 1, rng)
    loss = law.predict(r, params, **{k: np.full(len(r), v[0]) for k, v in extra.items()})
    uniform = law.predict(np.full((1, m), 1.0 / m), params, **extra)
    ratio = loss / uniform
    assert np.all(np.isfinite(ratio)) and np.all(loss > 0)
    assert ratio.max() < 10.0, f"max ratio {ratio.max():.3g}"


@pytest.mark.parametrize(("law_name", "power"), [("powershare", "alpha"), ("additive", "gamma")])
def test_bound_at_zero_shares_holds_at_the_extremes(law_name, power):
    """The docstrings' bound, L_i < 11 m_i, at the worst case: all of w_i. on an absent
    domain, the power at its upper limit 1, rho (where the law has it) at 1."""
    law = get_law(law_name)
    m = len(TRAIN)
    sizes = {"eval_domain": 1, "train_domain": m}
    values = {"m": 2.0, "rho": 1.0, power: 1.0}
    params = {
        p.name: np.eye(1, m)
        if p.name == "w"  # all of w_0. on training domain 0
        else np.full(tuple(sizes[d] for d in p.dims), values[p.name])
        for p in law.params
    }
    r = np.eye(m)[1:]  # every corner but domain 0's: domain 0 absent
    loss = law.predict(r, params)
    # q_0 = 0.1 / 1.1 = 1/11 exactly, so the worst case is 11 m (up to rounding)
    np.testing.assert_allclose(loss, 11.0 * 2.0, rtol=1e-12)
