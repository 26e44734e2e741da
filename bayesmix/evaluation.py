"""Score a posterior on held-out runs: what a team checks first, predicted against observed.

:func:`evaluate` predicts each held-out run's losses (its last checkpoint) from the posterior
and compares them with what was measured: per validation domain and overall, the mean absolute
error (nats per token), the bias (observed - predicted), Spearman's rank correlation across
runs, and the share of observed losses inside their predictive intervals with the intervals'
mean width. With validation-domain weights each run's weighted loss is scored too (domain
``overall``). ``bayesmix evaluate POSTERIOR HELDOUT`` prints the same, ``--json`` as JSON, and
``--plot`` draws predicted against observed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bayesmix import errors
from bayesmix.data import RunTable, as_run_table
from bayesmix.io import atomic_write_text, json_safe
from bayesmix.mixtures import domain_weights
from bayesmix.optimize import credible_interval

OVERALL = "overall"


@dataclass
class Evaluation:
    """Held-out scores. ``records``: one row per observed (run, eval_domain), and per run with
    domain ``overall`` when weights were given: observed, mean, lower, upper (nats per token),
    inside, error (observed - mean). ``ci_prob``/``ci_kind``: the intervals scored."""

    records: pd.DataFrame
    ci_prob: float
    ci_kind: str
    posterior: str | None = None
    heldout: str | None = None

    def by_domain(self) -> pd.DataFrame:
        """Per validation domain (``overall`` last when present): n, mae, bias, spearman,
        coverage, width."""
        rows = []
        for dom, g in self.records.groupby("eval_domain", sort=False):
            rows.append({"eval_domain": dom, **_scores(g)})
        out = pd.DataFrame(rows)
        order = out["eval_domain"].eq(OVERALL).to_numpy()
        return pd.concat([out[~order], out[order]], ignore_index=True)

    def summary(self) -> dict:
        """Over every (run, domain) pair (``overall`` rows left out): n_runs, n_pairs, mae, bias,
        coverage, width, the median of the per-domain Spearman correlations, and the overall
        loss's scores (``overall_*``) when weights were given."""
        pairs = self.records[self.records["eval_domain"] != OVERALL]
        dom = self.by_domain()
        per_domain = dom[dom["eval_domain"] != OVERALL]
        out = {
            "n_runs": int(self.records["run"].nunique()),
            "n_pairs": int(len(pairs)),
            **{k: v for k, v in _scores(pairs).items() if k not in ("n", "spearman")},
            "spearman_median": float(np.nanmedian(per_domain["spearman"]))
            if per_domain["spearman"].notna().any()
            else float("nan"),
            "ci_prob": self.ci_prob,
        }
        overall = dom[dom["eval_domain"] == OVERALL]
        if len(overall):
            row = overall.iloc[0]
            for key in ("mae", "bias", "spearman", "coverage", "width"):
                out[f"overall_{key}"] = float(row[key])
        return out

    def to_text(self) -> str:
        s = self.summary()
        lines = [
            f"held-out runs: {s['n_runs']} ({s['n_pairs']} losses); {self.ci_prob:.0%} "
            f"{self.ci_kind} predictive intervals",
            f"all domains: MAE {s['mae']:.4f}, bias {s['bias']:+.4f} (observed - predicted), "
            f"coverage {s['coverage']:.2f}, mean width {s['width']:.4f}, median Spearman "
            f"{s['spearman_median']:.3f}",
        ]
        if "overall_mae" in s:
            lines.append(
                f"overall loss: MAE {s['overall_mae']:.4f}, bias {s['overall_bias']:+.4f}, "
                f"Spearman {s['overall_spearman']:.3f}, coverage {s['overall_coverage']:.2f}, "
                f"width {s['overall_width']:.4f}"
            )
        lines += ["", self.by_domain().to_string(index=False, float_format=lambda v: f"{v:.4f}")]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return json_safe(
            {
                "posterior": self.posterior,
                "heldout": self.heldout,
                "summary": self.summary(),
                "by_domain": self.by_domain().to_dict(orient="records"),
                "records": self.records.to_dict(orient="records"),
            }
        )

    def save(self, path: str | Path) -> Path:
        """``.json`` (summary, per domain, records) or ``.csv`` (records), written atomically."""
        path = Path(path)
        if path.suffix == ".csv":
            text = self.records.to_csv(index=False)
        elif path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2)
        else:
            raise errors.OptionError(
                f"cannot write an evaluation to {path.name!r}", hint="use .json or .csv"
            )
        atomic_write_text(path, text)
        return path

    def plot(self, ax=None):
        """Predicted (mean, interval) against observed, one colour per domain; the diagonal is
        a perfect prediction. Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5.5, 5.0))
        else:
            fig = ax.figure
        rec = self.records[self.records["eval_domain"] != OVERALL]
        inside = rec["inside"].to_numpy(bool)
        for ok, marker, label in ((True, "o", "inside"), (False, "x", "outside")):
            r = rec[inside == ok]
            ax.errorbar(
                r["observed"],
                r["mean"],
                yerr=[r["mean"] - r["lower"], r["upper"] - r["mean"]],
                fmt=marker,
                ms=4,
                alpha=0.6,
                elinewidth=0.6,
                label=f"{label} its {self.ci_prob:.0%} interval ({len(r)})",
            )
        lo = float(np.nanmin(rec[["observed", "lower"]].to_numpy()))
        hi = float(np.nanmax(rec[["observed", "upper"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
        ax.set_xlabel("observed loss (nats per token)")
        ax.set_ylabel("predicted loss (nats per token)")
        s = self.summary()
        ax.set_title(
            f"held-out: MAE {s['mae']:.4f}, coverage {s['coverage']:.2f}", fontsize="medium"
        )
        ax.legend(fontsize="small")
        return fig


def evaluate(
    posterior,
    heldout,
    *,
    ci_prob: float = 0.9,
    ci_kind: str = "eti",
    weights=None,
    allow_subset: bool = False,
    random_seed: int | None = 0,
) -> Evaluation:
    """Score a posterior on held-out runs.

    Parameters
    ----------
    posterior : Posterior or path
        The fitted law (or its NetCDF file).
    heldout : RunTable, pandas.DataFrame or path
        Runs the fit did not see (tidy layout, or any file :func:`bayesmix.load` reads); each
        run's last checkpoint is predicted, at its own ``n_params``/``tokens`` when the law
        takes them.
    ci_prob, ci_kind : float, {"eti", "hdi"}
        The predictive intervals scored (default 90% equal-tailed).
    weights : mapping or path, optional
        ``{validation domain: weight}`` (or a JSON file of it): adds each run's weighted
        overall loss (domain ``overall``); ``allow_subset`` as in ``Posterior.intervals``.
    random_seed : int, optional
        Seed of the predictive draws.

    Returns
    -------
    Evaluation
        ``records`` (one row per held-out loss), ``by_domain()``, ``summary()``,
        ``to_text()``, ``save()`` and ``plot()``.

    Examples
    --------
    >>> import bayesmix as bm
    >>> runs, truth = bm.simulate(["web", "code"], n_runs=24, random_seed=0)
    >>> post = bm.fit(runs.select(runs.runs[:16]), random_seed=1)      # doctest: +SKIP
    >>> ev = bm.evaluate(post, runs.select(runs.runs[16:]))            # doctest: +SKIP
    >>> print(ev.to_text())                                             # doctest: +SKIP
    >>> import pandas as pd
    >>> rec = pd.DataFrame({"run": ["a", "b", "c"], "eval_domain": "web",
    ...                     "observed": [3.0, 3.2, 3.4], "mean": [3.1, 3.2, 3.3],
    ...                     "lower": [2.9, 3.0, 3.1], "upper": [3.3, 3.4, 3.5]})
    >>> rec["inside"] = (rec.lower <= rec.observed) & (rec.observed <= rec.upper)
    >>> rec["error"] = rec.observed - rec["mean"]
    >>> s = Evaluation(rec, ci_prob=0.9, ci_kind="eti").summary()
    >>> round(s["mae"], 4), s["coverage"], s["spearman_median"]
    (0.0667, 1.0, 1.0)
    """
    from bayesmix.loaders import load
    from bayesmix.posterior import Posterior

    if isinstance(posterior, (str, Path)):
        posterior = Posterior.load(posterior)
    if not 0 < ci_prob < 1:
        raise errors.OptionError(f"ci_prob must be in (0, 1), got {ci_prob}")
    source = None
    if isinstance(heldout, (str, Path)):
        source = str(heldout)
        heldout = load(heldout)
    table = as_run_table(heldout, "heldout").final()
    missing = sorted(set(posterior.train_domains) - set(table.train_domains))
    if missing:
        raise errors.DomainNameError(
            f"the held-out runs have no share of training domain {missing[0]!r}",
            source=table.source,
            column=f"mix.{missing[0]}",
            hint="held-out runs need the posterior's training domains",
        )
    shared = [d for d in posterior.eval_domains if d in table.eval_domains]
    if not shared:
        raise errors.DomainNameError(
            "the held-out runs share no validation domain with the posterior",
            source=table.source,
            hint=f"the posterior's domains: {', '.join(posterior.eval_domains)}",
        )
    scale = _scale_inputs(posterior, table)
    pred = posterior.predict(
        table.mixtures[list(posterior.train_domains)], random_seed=random_seed, **scale
    )
    draws = pred.predictive.stack(sample=("chain", "draw")).transpose(
        "mixture", "eval_domain", "sample"
    )
    k = [list(posterior.eval_domains).index(d) for d in shared]
    v = draws.values[:, k, :]  # (run, K', S)
    observed = table.losses[shared].to_numpy(float)  # (run, K')
    frames = [_rows(table.runs, shared, observed, v, ci_prob, ci_kind)]
    if weights is not None:
        w = domain_weights(weights, list(posterior.eval_domains), allow_subset=allow_subset)[k]
        ok = np.isfinite(observed)
        obs = np.array([observed[i][ok[i]] @ (w[ok[i]] / w[ok[i]].sum()) for i in range(len(v))])
        agg = np.einsum("rks,k->rs", v, w / w.sum())
        frames.append(_rows(table.runs, [OVERALL], obs[:, None], agg[:, None, :], ci_prob, ci_kind))
    records = pd.concat(frames, ignore_index=True)
    return Evaluation(records, ci_prob, ci_kind, posterior=posterior.source, heldout=source)


def _scale_inputs(posterior, table: RunTable) -> dict:
    """The held-out runs' own n_params/tokens for a law that takes them."""
    inputs = getattr(posterior.law, "inputs", ())
    out = {}
    for key in ("n_params", "tokens"):
        if key in inputs:
            col = table.column(key)
            if col is None:
                raise errors.FormatError(
                    f"the posterior's law needs {key} and the held-out runs have no {key!r} column",
                    source=table.source,
                    column=key,
                )
            out[key] = col.to_numpy(float)
    return out


def _rows(runs, domains, observed, draws, ci_prob, ci_kind) -> pd.DataFrame:
    """Records of (run, domain) pairs with an observed loss: draws (run, K, S)."""
    lower, upper = credible_interval(draws, ci_prob, axis=-1, ci_kind=ci_kind, skipna=True)
    mean = np.nanmean(draws, axis=-1)
    n, k = observed.shape
    frame = pd.DataFrame(
        {
            "run": np.repeat(np.asarray(runs, dtype=object), k),
            "eval_domain": np.tile(np.asarray(domains, dtype=object), n),
            "observed": observed.ravel(),
            "mean": mean.ravel(),
            "lower": lower.ravel(),
            "upper": upper.ravel(),
        }
    )
    frame = frame[np.isfinite(frame["observed"])].reset_index(drop=True)
    frame["inside"] = (frame["lower"] <= frame["observed"]) & (frame["observed"] <= frame["upper"])
    frame["error"] = frame["observed"] - frame["mean"]
    return frame


def _scores(g: pd.DataFrame) -> dict:
    """n, MAE, bias, Spearman (NaN below 3 runs or a constant side), coverage, width."""
    x, y = g["mean"].to_numpy(float), g["observed"].to_numpy(float)
    rho = (
        float(stats.spearmanr(x, y).statistic)
        if len(g) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
        else float("nan")
    )
    return {
        "n": int(len(g)),
        "mae": float(np.mean(np.abs(g["error"]))),
        "bias": float(np.mean(g["error"])),
        "spearman": rho,
        "coverage": float(np.mean(g["inside"])),
        "width": float(np.mean(g["upper"] - g["lower"])),
    }
