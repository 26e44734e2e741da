"""Read a bayesmix posterior with ArviZ: summary, PSIS-LOO and a plot, straight from the file.

A saved posterior is one NetCDF DataTree (posterior, sample_stats, log_likelihood,
observed_data, posterior_predictive, constant_data), so arviz-stats and arviz-plots read it
without conversion. This script loads a posterior (``--posterior FILE``) or fits one to
simulated runs, then prints ``arviz_stats.summary`` of a few parameters, PSIS-LOO on the
``run_loss`` log-likelihood, and saves an ``arviz_plots`` posterior predictive plot.

Run: ``.venv/bin/python examples/read_in_arviz.py --out out/examples``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import arviz_plots as azp
import arviz_stats as azs
import matplotlib

import bayesmix as bm

matplotlib.use("Agg")  # files only, no window
HERE = Path(__file__).resolve().parent

# %% options
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument(
    "--out",
    type=Path,
    default=HERE.parent / "out" / "examples",
    help="folder for the posterior file and the plot",
)
ap.add_argument(
    "--posterior",
    type=Path,
    default=None,
    help="a saved posterior (.nc) to read instead of fitting one",
)
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
args.out.mkdir(parents=True, exist_ok=True)

# %% a posterior: loaded, or fitted to 20 simulated runs over 3 domains and saved
if args.posterior is not None:
    path = args.posterior
else:
    runs, _ = bm.simulate(["web", "code", "books"], n_runs=20, random_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary below shows R-hat and ESS
        post = bm.fit(runs, random_seed=1, **mcmc)
    path = post.save(args.out / "arviz_posterior.nc")
post = bm.Posterior.load(path)
tree = post.tree  # an xarray DataTree: what ArviZ 1.x functions take
print(f"posterior file: {path}; groups: {', '.join(sorted(tree.children))}")

# %% summary of the law's parameters (mean, sd, intervals, ESS, R-hat)
names = [v for v in ("m", "rho") if v in tree["posterior"].data_vars]
print(azs.summary(tree, var_names=names))

# %% PSIS-LOO on the per-run log-likelihood (one value per run and validation domain summed)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # few draws: Pareto-k warnings are expected
    loo = azs.loo(tree, var_name="run_loss")
print(f"elpd_loo {loo.elpd:.2f} (se {loo.se:.2f}), p_loo {loo.p:.2f}")

# %% posterior predictive check: observed vs predicted losses per validation domain
pc = azp.plot_ppc_dist(tree)
png = args.out / "arviz_ppc.png"
pc.savefig(png)
print(f"plot saved to {png}")
