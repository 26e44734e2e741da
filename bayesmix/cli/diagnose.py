"""``bayesmix diagnose POSTERIOR.nc``: the convergence report of a saved posterior.

Prints the diagnostics gate stored at fit time (divergences, tree depth, E-BFMI, R-hat, ESS) and
a summary of the parameters the law shows (e.g. M4's m, rho, t, c, k) and the noise scales
(mean, sd, 90 % equal-tailed interval, ESS, R-hat, MCSE; from arviz-stats). ``--json`` prints
one JSON object instead.

Exit status: 0 when the posterior passed the gate, 1 when it failed or holds NaN/inf draws (a
damaged file; so scripts can stop), 2 for bad input (missing, damaged or non-bayesmix file).
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict

import numpy as np

from bayesmix.cli._output import json_safe, loud_warning

#: Noise scales summarised after the law's parameters, when the posterior has them.
NOISE_SCALES = ("sigma", "run_sigma")
CI_PROB = 0.9


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "diagnose",
        help="convergence report and parameter summary of a saved posterior",
        description=__doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2],
        epilog="examples:\n  bayesmix diagnose posterior.nc\n"
        "  bayesmix diagnose posterior.nc --json | jq .diagnostics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior from `bayesmix fit`")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.posterior.posterior import Posterior

    post = Posterior.load(args.posterior)
    table = parameter_summary(post)
    d = post.diagnostics
    warning = d.warning()
    bad = post.nonfinite_draws()
    if bad:  # the stored gate passed before the file was damaged: say so, fail
        damaged = (
            "the file is damaged: posterior draws of "
            + ", ".join(f"{name} ({n} values)" for name, n in bad.items())
            + " are NaN or inf; refit it"
        )
        warning = f"{damaged}; {warning}" if warning else damaged
    ok = d.ok and not bad
    status = 0 if ok else 1
    if args.json:
        out = {
            "posterior": str(args.posterior),
            "model": post.spec.name,
            "ok": ok,
            "warning": warning,
            "nonfinite_draws": bad,
            "diagnostics": asdict(d),
            "settings": post.settings,
            "summary": [
                {"parameter": name, **row} for name, row in table.to_dict(orient="index").items()
            ],
        }
        print(json.dumps(json_safe(out), indent=2))
        return status
    s = post.settings
    print(repr(post))
    print(f"model {post.spec.name!r}: {post.spec.description}")
    if s:
        print(
            f"sampler {s.get('sampler')}: {s.get('chains')} chains x {s.get('draws')} draws "
            f"after {s.get('tune')} tuning, seed {s.get('seed')}"
        )
    print("\ndiagnostics gate")
    print(d.table())
    print(f"\nparameters ({CI_PROB:.0%} equal-tailed intervals)")
    print(format_summary(table))
    loud_warning(warning)
    return status


def parameter_summary(post):
    """``arviz_stats.summary`` of the parameters the law shows (:attr:`Law.shown`) and the noise
    scales, raw numbers (a DataFrame)."""
    import arviz_stats

    stored = post.tree["posterior"].data_vars
    names = [n for n in (*post.law.shown_names, *NOISE_SCALES) if n in stored]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # R-hat/ESS warnings: the gate already reports them
        return arviz_stats.summary(
            post.tree, var_names=names, round_to="none", ci_prob=CI_PROB, ci_kind="eti"
        )


def format_summary(table) -> str:
    """Aligned text: 4 decimals for values, integers for ESS, 3 decimals for R-hat."""

    def fmt(col):
        if col.startswith("ess"):
            return lambda v: "nan" if np.isnan(v) else f"{v:.0f}"
        if col == "r_hat":
            return lambda v: f"{v:.3f}"
        return lambda v: f"{v:.4f}"

    return table.to_string(formatters={c: fmt(c) for c in table.columns})
