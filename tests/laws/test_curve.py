"""The nested pipeline's curve laws (bayesmix.laws.curve, .step, .size), no MCMC.

They take no mixture, so they are not mixing laws: the registry leaves them out and the
contract tests of tests/laws/test_laws.py do not apply; these tests check the same promises
that do apply (declarations, one formula for NumPy and PyTensor, the model's variables with
the declared dims) and what the curve form promises (the level at the reference, the
annealing gain).
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bayesmix.laws import available_laws
from bayesmix.laws.size import SizeLaw
from bayesmix.laws.step import StepLaw
from bayesmix.model.simulation import simulate
from bayesmix.scaling.curve_model import build_curve_model
from bayesmix.scaling.curves import step_data

LAWS = [StepLaw(), SizeLaw()]


def _values(law, rng, shape=(4, 9)) -> tuple[dict, dict]:
    """Inputs and parameters gathered per point, drawn where the priors put them."""
    inputs = {"log_ratio": rng.normal(0.0, 1.0, shape), "anneal": rng.uniform(0, 1.5, shape)}
    params = {
        "level": rng.normal(3.0, 0.3, shape),
        "R": np.exp(rng.normal(-1.5, 0.5, shape)),
        "exponent": np.exp(rng.normal(np.log(0.4), 0.3, shape)),
        "C": np.exp(rng.normal(np.log(0.1), 0.5, shape)),
    }
    return {k: inputs[k] for k in law.inputs}, params


def test_curve_laws_are_not_registered_as_mixing_laws():
    assert not {"step", "size"} & set(available_laws())


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_declarations_are_consistent(law):
    assert law.description and "r" not in law.inputs and "log_ratio" in law.inputs
    assert len(set(law.param_names)) == len(law.param_names)
    assert all(p.description for p in law.params)
    assert set(law.priors) >= {"log_exponent_mu", "log_R_mu", "log_sigma"}


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_numpy_and_pytensor_means_agree(law):
    inputs, params = _values(law, np.random.default_rng(1))
    sym = {k: pt.matrix(k) for k in params}
    sym_in = {k: pt.matrix(k) for k in inputs}
    fn = pytensor.function(
        [*sym.values(), *sym_in.values()], law.mean(sym_in, sym, pt), on_unused_input="ignore"
    )
    want = law.mean(inputs, params)
    assert want.shape == (4, 9) and np.all(np.isfinite(want))
    np.testing.assert_allclose(fn(*params.values(), *inputs.values()), want, rtol=1e-10)


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_level_is_the_loss_at_the_reference(law):
    inputs, params = _values(law, np.random.default_rng(2))
    inputs = {k: np.zeros_like(v) for k, v in inputs.items()}
    np.testing.assert_allclose(law.mean(inputs, params), params["level"])


def test_annealing_lowers_the_step_law_by_c_s2():
    law = StepLaw()
    inputs, params = _values(law, np.random.default_rng(3))
    flat = law.mean({**inputs, "anneal": np.zeros_like(inputs["anneal"])}, params)
    np.testing.assert_allclose(
        flat - law.mean(inputs, params), params["C"] * inputs["anneal"], rtol=1e-12
    )


def test_centres_are_chinchillas_term_in_the_curve_form():
    """R at the reference is Chinchilla's B / D^beta (and A / N^alpha) there."""
    for law, coef, ref in ((StepLaw(), 2085.0, 1e9), (SizeLaw(), 482.0, 1e8)):
        log_e, log_r = law.centres(ref)
        assert np.isclose(np.exp(log_e), law.chinchilla_exponent)
        assert np.isclose(np.exp(log_r), coef / ref**law.chinchilla_exponent)


def test_curve_model_has_the_declared_dims():
    """Every sampled parameter of the step law is a model variable with its declared dims
    (level and R are integrated out and drawn afterwards)."""
    runs, _ = simulate(
        ["web", "code"], n_runs=4, random_seed=0, sizes=[2e7, 5e7], steps=[500, 1000]
    )
    model = build_curve_model(step_data(runs))
    law = StepLaw()
    for p in law.params:
        if p.name in ("level", "R", "C"):  # C: only when some rate decayed
            assert p.name not in model.named_vars
            continue
        assert model.named_vars_to_dims.get(p.name, ()) == p.dims, p.name
