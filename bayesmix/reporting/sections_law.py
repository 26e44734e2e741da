"""The report's sections on what the law says: the slope matrix as a heatmap (3), the loss
along lines through the simplex from the starting mixture towards each training domain's
vertex, and a ternary slice through three training domains (4)."""

from __future__ import annotations

import math

import numpy as np

from bayesmix import errors
from bayesmix.data.table import check_known_domains
from bayesmix.posterior.intervals import credible_interval
from bayesmix.reporting.figures import (
    embed_figure,
    esc,
    new_figure,
    panel_grid,
    tick_fontsize,
)
from bayesmix.reporting.view import View

#: Heatmap annotations: both numbers up to this many cells, one number up to the second.
ANNOTATE_TWO, ANNOTATE_ONE = 150, 400


# ------------------------------------------------------------------------------ 3. heatmap
def section_heatmap(view: View) -> tuple[str, str, str]:
    """The law's validation x training matrix (``t``) as a heatmap of posterior means,
    annotated while the cells are large enough."""
    param = view.post.law.effect_matrix()  # validation x training, e.g. M4's t
    if param is None:
        return (
            "slopes",
            "Slope matrix",
            f"<p>Law {esc(view.post.law.name)} has no validation x training matrix.</p>",
        )
    name, signed = param.name, param.signed
    da = view.post.tree["posterior"][name].transpose("chain", "draw", "eval_domain", "train_domain")
    draws = da.values.reshape((-1,) + da.shape[2:])
    mean, sd = draws.mean(0), draws.std(0)
    p_neg = (draws < 0).mean(0)
    k, m = mean.shape
    cell = min(0.75, max(0.2, 11.0 / max(m, 1)))
    fig = new_figure(max(5.0, cell * m + 2.5), max(2.5, cell * k * 0.8 + 1.5))
    ax = fig.subplots()
    lim = float(np.nanmax(np.abs(mean))) or 1.0
    image = ax.imshow(
        mean,
        cmap="RdBu_r" if signed else "viridis",
        aspect="auto",
        vmin=-lim if signed else None,
        vmax=lim if signed else None,
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"posterior mean of {name}")
    ax.set_xticks(range(m), view.train, rotation=90, fontsize=tick_fontsize(m))
    ax.set_yticks(range(k), view.eval, fontsize=tick_fontsize(k))
    ax.set_xlabel("training domain")
    ax.set_ylabel("validation domain")
    cells = k * m
    what = "P(t < 0)" if signed else "posterior sd"
    extra = sd if not signed else p_neg
    if cells <= ANNOTATE_ONE:
        size = 7 if cells <= ANNOTATE_TWO else 5.5
        for i in range(k):
            for j in range(m):
                text = (
                    f"{mean[i, j]:.2f}\n{extra[i, j]:.2f}"
                    if cells <= ANNOTATE_TWO
                    else f"{extra[i, j]:.2f}"
                )
                shade = abs(mean[i, j]) / lim > 0.6 if signed else False
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if shade else "black",
                )
    note = {True: f"cells show the mean and {what}", False: f"cells show {what}"}[
        cells <= ANNOTATE_TWO
    ]
    caption = f"Posterior mean of {name} (validation x training domain)" + (
        f"; {note}."
        if cells <= ANNOTATE_ONE
        else f"; {k} x {m} cells are too small to annotate: {what} is the second panel."
    )
    if signed:
        caption += " Negative (blue): more of that training domain lowers that validation loss."
    out = [embed_figure(fig, "slopes", caption)]
    if cells > ANNOTATE_ONE:
        fig2 = new_figure(max(5.0, cell * m + 2.5), max(2.5, cell * k * 0.8 + 1.5))
        ax2 = fig2.subplots()
        im2 = ax2.imshow(
            extra,
            cmap="PuOr_r" if signed else "magma",
            aspect="auto",
            vmin=0 if signed else None,
            vmax=1 if signed else None,
        )
        fig2.colorbar(im2, ax=ax2, shrink=0.8, label=what)
        ax2.set_xticks(range(m), view.train, rotation=90, fontsize=tick_fontsize(m))
        ax2.set_yticks(range(k), view.eval, fontsize=tick_fontsize(k))
        out.append(embed_figure(fig2, "slopes-uncertainty", f"{what} of each element of {name}."))
    return "slopes", f"Slope matrix {name}", "\n".join(out)


# ------------------------------------------------------------------------------ 4. simplex
def _through(r: np.ndarray, j: int, shares: np.ndarray) -> np.ndarray:
    """Mixtures on the line through ``r`` and vertex j with share ``shares`` of domain j (the
    other domains keep their proportions to each other)."""
    rest = np.delete(r, j)
    rest = rest / rest.sum() if rest.sum() > 0 else np.full(len(rest), 1.0 / len(rest))
    out = np.empty((len(shares), len(r)))
    out[:, j] = shares
    out[:, np.arange(len(r)) != j] = (1.0 - shares)[:, None] * rest[None, :]
    return out


def section_simplex(view: View, abc) -> tuple[str, str, str]:
    """The expected aggregate loss along the line from the starting mixture to each training
    domain's vertex, and the ternary slice through the domains ``abc`` (None: no slice)."""
    r, m = view.mixture, len(view.train)
    xs = np.linspace(0.0, 1.0, 41)
    rows, cols = panel_grid(m, 8)
    fig = new_figure(2.3 * cols + 0.5, 1.9 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    at_r = view.overall(r[None, :])[:, 0].mean()
    lo_c, hi_c = view.constraints.lower, view.constraints.upper
    covered = view.post.mixture_range()
    for j, dom in enumerate(view.train):
        ax = axes.flat[j]
        # the shares the fitted runs covered: outside it the curve is the law's form
        ax.axvspan(covered.low[j], covered.high[j], color="0.9", lw=0, zorder=0)
        values = view.overall(_through(r, j, xs))  # (S, n)
        lo, hi = credible_interval(values, view.prob, ci_kind=view.ci_kind)
        ax.fill_between(xs, lo, hi, color="tab:blue", alpha=0.25, lw=0)
        ax.plot(xs, values.mean(0), color="tab:blue", lw=1.2)
        ax.plot([r[j]], [at_r], "o", color="tab:red", ms=4)
        if lo_c[j] > 0:
            ax.axvline(lo_c[j], color="0.4", ls=":", lw=0.9)
        if hi_c[j] < 1:
            ax.axvline(hi_c[j], color="0.4", ls=":", lw=0.9)
        ax.set_title(dom, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[m:]:
        ax.set_visible(False)
    fig.supxlabel("share of that training domain (others keep their proportions)", fontsize=9)
    fig.supylabel(f"expected loss{view.scale_text}", fontsize=9)
    lines = embed_figure(
        fig,
        "simplex-lines",
        f"Expected aggregate loss ({view.weights_text}) along the line through "
        f"the {view.label} (red dot) and each training domain's vertex: share 0 "
        f"on the left, the pure domain on the right; band: {view.prob:.0%} "
        "interval over posterior draws; dotted: that domain's share limits; grey: the "
        "shares the fitted runs covered (outside it the curve is the law's form).",
    )
    parts = [
        f"<p>Starting point: the {esc(view.label)}: "
        + ", ".join(f"{esc(d)} {v:.3f}" for d, v in zip(view.train, r))
        + ".</p>",
        lines,
    ]
    if abc is not None:
        parts.append(_ternary_figure(view, abc))
    else:
        parts.append("<p>No ternary view: it needs at least three training domains.</p>")
    return "simplex", "Loss across the simplex", "\n".join(parts)


def ternary_domains(ternary, view: View):
    """The three training domains of the ternary view: ``ternary`` (a sequence or
    ``"a,b,c"``), by default the three largest shares of the starting mixture; None when the
    posterior has fewer than three training domains. Errors name the parameter ``ternary=``."""
    if len(view.train) < 3:
        if ternary:
            given = ternary if isinstance(ternary, str) else ",".join(str(s) for s in ternary)
            raise errors.OptionError(
                f"ternary={given!r} asks for a ternary view, which needs at least three "
                f"training domains (the posterior has {len(view.train)})",
                param="ternary",
            )
        return None
    if ternary is None:
        top = np.argsort(-view.mixture, kind="stable")[:3]
        return [view.train[i] for i in sorted(top)]
    names = (
        [s.strip() for s in ternary.split(",")]
        if isinstance(ternary, str)
        else [str(s) for s in ternary]
    )
    if len(names) != 3 or len(set(names)) != 3:
        raise errors.OptionError(
            f"ternary={','.join(names)!r} does not name three different training domains",
            hint="e.g. ternary=web,code,books",
            param="ternary",
        )
    check_known_domains(names, view.train, "training")
    return names


def _ternary_xy(bary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (n, 3) -> plane: vertex a at (0, 0), b at (1, 0), c at (1/2, sqrt(3)/2)."""
    return bary[:, 1] + 0.5 * bary[:, 2], bary[:, 2] * math.sqrt(3) / 2


def _ternary_figure(view: View, abc) -> str:
    from matplotlib.tri import Triangulation

    idx = [view.train.index(d) for d in abc]
    r = view.mixture
    inside = float(r[idx].sum())
    if inside <= 0:
        return "<p>No ternary view: the three domains have no share in the starting point.</p>"
    n = 30
    bary = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], float) / n
    mix = np.repeat(r[None, :], len(bary), axis=0)
    mix[:, idx] = inside * bary
    values = view.overall(mix)  # (S, n)
    x, y = _ternary_xy(bary)
    tri = Triangulation(x, y)
    fig = new_figure(11, 4.8)
    axes = fig.subplots(1, 2)
    here = _ternary_xy((r[idx] / inside)[None, :])
    fit_mix = view.post.fit_data().mixtures[view.train].to_numpy(dtype=float)
    share = fit_mix[:, idx].sum(1)
    keep = share > 0
    runs_xy = _ternary_xy(fit_mix[keep][:, idx] / share[keep, None])
    optima_xy = None
    if view.decision is not None and view.decision.draw_optima is not None:
        opt = view.decision.draw_optima.transpose("sample", "train_domain").values
        opt = opt[:: max(1, len(opt) // 300)]
        s = opt[:, idx].sum(1)
        opt = opt[s > 0]
        optima_xy = _ternary_xy(opt[:, idx] / s[s > 0, None])
    for ax, z, label, cmap in (
        (axes[0], values.mean(0), "posterior mean", "viridis"),
        (axes[1], values.std(0), "posterior sd", "magma"),
    ):
        cs = ax.tricontourf(tri, z, levels=14, cmap=cmap)
        fig.colorbar(cs, ax=ax, shrink=0.8, label=f"expected loss: {label}")
        ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], color="k", lw=0.8)
        if optima_xy is not None:
            ax.plot(*optima_xy, ".", color="orange", ms=2, alpha=0.5, label="per-draw optima")
        # white with a black rim: visible on any colour, and on the triangle's edges (runs
        # with a zero share of a domain), which clipping and a white rim used to hide
        ax.scatter(
            *runs_xy,
            s=8 + 40 * share[keep],
            facecolors="white",
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            clip_on=False,
            label="fitted runs",
        )
        ax.plot(
            *here, "*", color="red", ms=13, markeredgecolor="k", label=view.label.split(" (")[0]
        )
        for (px, py), name, ha in (
            ((0, 0), abc[0], "right"),
            ((1, 0), abc[1], "left"),
            ((0.5, math.sqrt(3) / 2), abc[2], "center"),
        ):
            ax.text(px, py + (0.03 if ha == "center" else -0.04), name, ha=ha, fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].legend(loc="upper left", fontsize=7, framealpha=0.8)
    others = [d for d in view.train if d not in abc]
    rest = (
        f" The other {len(others)} domains keep their shares of the starting point "
        f"({1 - inside:.3f} in all)."
        if others
        else ""
    )
    return embed_figure(
        fig,
        "ternary",
        f"Expected aggregate loss over mixtures of {', '.join(abc)} "
        f"(a slice of the simplex through the {view.label}, red star).{rest} "
        "Circles: fitted runs projected onto the slice (size: their share of these "
        "three domains; the region they span is what the data cover)"
        + ("; orange: per-draw optima" if optima_xy is not None else "")
        + ".",
    )


__all__ = ["ANNOTATE_ONE", "ANNOTATE_TWO", "section_heatmap", "section_simplex", "ternary_domains"]
