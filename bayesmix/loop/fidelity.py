"""Multi-fidelity acquisition: which mixture to train next, at which proxy size and for how long.

A :class:`Menu` lists the proxy configurations one can train: model size ``n_params``, planned
``steps`` and the tokens they give, and each entry's cost (default proportional to parameters x
tokens, the compute of a dense transformer's training run; any positive cost the user sets
instead). :func:`menu_candidates` crosses mixtures with the menu: every candidate is a
(mixture, size, steps) triple with its cost (:class:`bayesmix.loop.candidates.Candidates`).

The question is the best mixture for the TARGET run (size and tokens larger than any proxy), so
the belief is the posterior of a law over mixture, size and tokens (any law whose inputs include
``n_params`` and ``tokens``, e.g. ``scaling``) evaluated at the target's scale
(``Belief.from_posterior(post, inputs={"n_params": N_target, "tokens": D_target})``); results of
runs at any size and step feed the same posterior.

:class:`TargetInfo` (``target-info``) scores a candidate by the mutual information between the
objective it would measure AT ITS OWN SIZE AND STEPS and the group of the target-scale optimum
(k-means groups of every draw's optimum at the target scale;
:func:`bayesmix.loop.information.group_information`), per unit of cost (``cost ** cost_power``).
A small proxy is cheap but tells less about the target's optimum where the law says its loss
moves differently with scale; a large one tells more at a higher price. Batches are greedy with
the ensemble update of :mod:`bayesmix.loop.information` (a chosen run lowers the information of
the candidates its result would predict, at every size), so one batch mixes sizes. The draws'
predictions are Winsorised per candidate (:func:`bayesmix.loop.information.robust_values`), so
a few absurd draws do not decide. Law-generic: it uses only the law's mean and per-draw optima.

A single-scale strategy (thompson, optimum-info, bald, random) chooses mixtures only; with a
menu its runs are planned at the menu's largest entry (:func:`at_menu_entry`,
:func:`largest_entry`: the largest size at its most steps, the proxy nearest the target), so
every proposal has a size and steps to train at.

Menus as text (the ``--menu`` of ``bayesmix init``/``propose``/``run``): :func:`parse_menu` reads
comma-separated ``SIZE@STEPS[=COST]`` entries (``70M@10000,160M@10000,410M@20000=12``; sizes and
steps as numbers or with K, M, B, T), :func:`parse_scale` the target's ``SIZE@STEPS``,
:func:`menu_text` writes a menu back in that form, and :func:`check_target_tokens` refuses a
target token count that is not the target scale's steps x tokens per step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.ye_logs import TOKENS_PER_STEP, parse_size, size_label
from bayesmix.loop.batch import Batch
from bayesmix.loop.belief import Belief
from bayesmix.loop.candidates import Candidates
from bayesmix.loop.information import Ensemble, OptimumInfo, group_information

#: Inputs a law must take for multi-fidelity acquisition.
SCALE_INPUTS = ("n_params", "tokens")
#: The text form of one menu entry.
ENTRY_FORM = "SIZE@STEPS[=COST], e.g. 70M@10000 or 160M@10000=2.5"
_AMOUNT_RE = re.compile(r"\d+(\.\d+)?[KMBT]", flags=re.I)


@dataclass(frozen=True)
class Menu:
    """Proxy configurations one can train: ``n_params``, ``steps``, ``tokens`` and ``cost``
    (each (E,), positive; cost relative, any unit)."""

    n_params: np.ndarray
    steps: np.ndarray
    tokens: np.ndarray
    cost: np.ndarray
    #: The cost relative costs are stated against (None: this menu's cheapest entry; a
    #: :meth:`restrict`-ed menu keeps its whole menu's).
    reference_cost: float | None = None

    def __post_init__(self):
        arrays = {k: np.asarray(getattr(self, k), float).reshape(-1) for k in self.fields()}
        n = len(arrays["n_params"])
        for name, values in arrays.items():
            if len(values) != n or n == 0:
                raise errors.OptionError(
                    f"menu {name}: {len(values)} values for {n} entries", param=name
                )
            if not np.all(np.isfinite(values) & (values > 0)):
                row = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
                raise errors.OptionError(
                    f"menu entry {row + 1}: {name} must be a positive number", param=name
                )
            object.__setattr__(self, name, values)

    @staticmethod
    def fields() -> tuple[str, ...]:
        return ("n_params", "steps", "tokens", "cost")

    def __len__(self) -> int:
        return len(self.n_params)

    @property
    def unit(self) -> float:
        """The cost of one unit of relative cost: :attr:`reference_cost`, else the cheapest."""
        return float(self.cost.min() if self.reference_cost is None else self.reference_cost)

    def restrict(self, size: str, param: str = "size") -> Menu:
        """The entries at ``size``: ``"160M"`` every step count of that model size,
        ``"160M@10000"`` that one entry; the planned runs' relative costs are still stated
        against this menu's :attr:`unit`. OptionError naming ``param`` when no entry
        matches."""
        text = str(size).strip()
        steps: float | None = None
        if "@" in text:
            n, steps, _ = _entry(text, param, with_cost=False)
        elif (amount := parse_amount(text)) is not None:
            n = amount
        else:
            raise errors.OptionError(
                f"{param}={size!r} is not a model size (e.g. 160M) or SIZE@STEPS", param=param
            )
        keep = np.isclose(self.n_params, n, rtol=1e-6)
        if steps is not None:
            keep &= np.isclose(self.steps, steps, rtol=1e-9)
        if not keep.any():
            entries = ", ".join(entry_text(self, e) for e in range(len(self)))
            raise errors.OptionError(
                f"{param}={size!r} is not in the ledger's menu",
                hint=f"entries: {entries}",
                param=param,
            )
        kept = self.n_params[keep], self.steps[keep], self.tokens[keep], self.cost[keep]
        return Menu(*kept, reference_cost=self.unit)

    @classmethod
    def build(
        cls,
        n_params: Sequence[float],
        steps: Sequence[float],
        *,
        cost: Sequence[float] | None = None,
        tokens_per_step: float = TOKENS_PER_STEP,
        grid: bool = True,
    ) -> Menu:
        """Every size at every step count (``grid``), or size i at step count i (``grid=False``,
        equal lengths). ``cost``: one per entry (default n_params x tokens)."""
        n = np.asarray(n_params, float).reshape(-1)
        s = np.asarray(steps, float).reshape(-1)
        if grid:
            n, s = np.repeat(n, len(s)), np.tile(s, len(n))
        elif len(n) != len(s):
            raise errors.OptionError(
                f"{len(n)} sizes and {len(s)} step counts: give one step count per size",
                param="steps",
            )
        tokens = s * float(tokens_per_step)
        return cls(n, s, tokens, n * tokens if cost is None else np.asarray(cost, float))

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, *, tokens_per_step: float = TOKENS_PER_STEP, source=None
    ) -> Menu:
        """A menu from a table with columns ``n_params``, ``steps``, optional ``tokens`` (default
        steps x ``tokens_per_step``) and ``cost`` (default n_params x tokens)."""
        missing = [c for c in ("n_params", "steps") if c not in frame.columns]
        if missing:
            raise errors.FormatError(
                f"a proxy menu needs a column {missing[0]!r}", source=source, column=missing[0]
            )
        cols = {}
        for col in ("n_params", "steps", "tokens", "cost"):
            if col not in frame.columns:
                continue
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
            bad = ~(np.isfinite(values) & (values > 0))
            if bad.any():
                raise errors.NonNumericError(
                    f"{col} must be a positive number",
                    source=source,
                    row=int(np.flatnonzero(bad)[0]) + 2,
                    column=col,
                )
            cols[col] = values
        tokens = cols.get("tokens", cols["steps"] * float(tokens_per_step))
        cost = cols.get("cost", cols["n_params"] * tokens)
        return cls(cols["n_params"], cols["steps"], tokens, cost)

    def frame(self) -> pd.DataFrame:
        """The menu as a table: n_params, steps, tokens, cost."""
        return pd.DataFrame({k: getattr(self, k) for k in self.fields()})


def parse_amount(text: str) -> float | None:
    """``"70M"`` -> 7e7, ``"1e4"`` -> 1e4, ``"300"`` -> 300; None unless a positive finite
    number (plain, or with K, M, B or T)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = parse_size(text) if _AMOUNT_RE.fullmatch(text) else math.nan
    return value if math.isfinite(value) and value > 0 else None


def check_tokens_per_step(tokens_per_step, param: str = "tokens_per_step") -> float:
    """``tokens_per_step`` as a positive finite float; OptionError naming ``param``."""
    try:
        value = float(tokens_per_step)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise errors.OptionError(
            f"{param}={tokens_per_step!r} must be a positive number of tokens", param=param
        )
    return value


def _entry(item: str, param: str, with_cost: bool) -> tuple[float, float, float | None]:
    """(n_params, steps, cost or None) of one ``SIZE@STEPS[=COST]`` entry; OptionError naming
    ``param`` and the entry."""
    body, has_cost, cost_text = item.partition("=")
    size_text, at, steps_text = body.partition("@")
    form = ENTRY_FORM if with_cost else "SIZE@STEPS, e.g. 1B@100000"

    def bad(problem: str) -> errors.OptionError:
        return errors.OptionError(f"{param}={item!r}: {problem}", hint=form, param=param)

    if not at or not size_text.strip() or not steps_text.strip():
        raise bad("not SIZE@STEPS")
    if has_cost and not with_cost:
        raise bad("the target has no cost")
    size, steps = parse_amount(size_text), parse_amount(steps_text)
    if size is None:
        raise bad(f"size {size_text.strip()!r} is not a positive number (or one with K, M, B, T)")
    if steps is None or not float(steps).is_integer():
        raise bad(f"steps {steps_text.strip()!r} is not a positive whole number")
    cost = None
    if has_cost:
        try:
            cost = float(cost_text)
        except ValueError:
            cost = math.nan
        if not (math.isfinite(cost) and cost > 0):
            raise bad(f"cost {cost_text.strip()!r} is not a positive number")
    return size, steps, cost


def parse_menu(text: str, *, tokens_per_step: float = TOKENS_PER_STEP, param: str = "menu") -> Menu:
    """A :class:`Menu` from ``"70M@10000,160M@10000,410M@20000"``: comma-separated
    ``SIZE@STEPS[=COST]`` entries (tokens = steps x ``tokens_per_step``; costs for every entry
    or none, default n_params x tokens). OptionError naming ``param`` and the first bad entry:
    malformed, not positive, a repeated (size, steps) pair, costs on some entries only."""
    tps = check_tokens_per_step(tokens_per_step)
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise errors.OptionError(f"{param}={text!r} lists no entry", hint=ENTRY_FORM, param=param)
    entries, seen = [], set()
    for item in items:
        if not item:
            raise errors.OptionError(
                f"{param}={text!r} has an empty entry", hint=ENTRY_FORM, param=param
            )
        entry = _entry(item, param, with_cost=True)
        if entry[:2] in seen:
            raise errors.OptionError(
                f"{param}={item!r}: size {size_label(entry[0])} at {entry[1]:g} steps is listed "
                "twice",
                param=param,
            )
        seen.add(entry[:2])
        entries.append(entry)
    costs = [c for _, _, c in entries]
    if any(c is None for c in costs) and not all(c is None for c in costs):
        item = items[[c is None for c in costs].index(True)]
        raise errors.OptionError(
            f"{param}={item!r} has no cost while other entries have one: give a cost for every "
            "entry or for none (default n_params x tokens)",
            param=param,
        )
    n_params, steps = [e[0] for e in entries], [e[1] for e in entries]
    cost = None if costs[0] is None else [float(c) for c in costs if c is not None]
    return Menu.build(n_params, steps, cost=cost, tokens_per_step=tps, grid=False)


def parse_scale(
    text: str, *, tokens_per_step: float = TOKENS_PER_STEP, param: str = "target_scale"
) -> dict[str, float]:
    """The target run's scale from ``"1B@100000"`` (``SIZE@STEPS``): ``{"n_params": 1e9,
    "tokens": 100000 x tokens_per_step}``; OptionError naming ``param``."""
    tps = check_tokens_per_step(tokens_per_step)
    size, steps, _ = _entry(str(text).strip(), param, with_cost=False)
    return {"n_params": size, "tokens": steps * tps}


def menu_text(menu: Menu) -> str:
    """The menu as ``--menu`` text: ``SIZE@STEPS=COST`` entries, costs relative to the
    cheapest entry."""
    rel = menu.cost / menu.unit
    return ",".join(
        f"{size_label(n)}@{s:g}={c:.4g}" for n, s, c in zip(menu.n_params, menu.steps, rel)
    )


def menu_candidates(mixtures: Candidates, menu: Menu) -> Candidates:
    """Every mixture of ``mixtures`` at every menu entry: (mixture, size, steps) candidates,
    mixture-major, with the entries' sizes, steps, tokens and costs."""
    n, e = len(mixtures), len(menu)
    ids = None
    if mixtures.ids is not None:
        ids = tuple(f"{i}@{k}" for i in mixtures.ids for k in range(e))
    return replace(
        mixtures,
        mixtures=np.repeat(mixtures.mixtures, e, axis=0),
        ids=ids,
        n_params=np.tile(menu.n_params, n),
        steps=np.tile(menu.steps, n),
        tokens=np.tile(menu.tokens, n),
        costs=np.tile(menu.cost, n),
    )


def full_runs(menu: Menu) -> np.ndarray:
    """Index of each size's longest entry, sizes ascending."""
    return np.array(
        [
            int(
                np.flatnonzero(
                    (menu.n_params == n) & (menu.steps == menu.steps[menu.n_params == n].max())
                )[0]
            )
            for n in np.unique(menu.n_params)
        ]
    )


def spans_sizes(law) -> bool:
    """True when ``law`` reads model size and tokens (:data:`SCALE_INPUTS`), so its fits use
    runs of every menu entry."""
    return all(k in law.inputs for k in SCALE_INPUTS)


def initial_entries(menu: Menu, n: int, law=None) -> np.ndarray:
    """Menu entries of an initial design's ``n`` runs. For a law over model size and tokens
    (or ``law`` None): run i at the longest entry of size ``i mod (number of sizes)`` (sizes
    ascending), so the first fit sees every size. For a law of one model size (e.g. the
    default m4, which fits the runs of one size only): every run at :func:`largest_entry`."""
    if law is None or spans_sizes(law):
        return np.resize(full_runs(menu), n)
    return np.full(n, largest_entry(menu))


def one_size_note(law, menu: Menu) -> str:
    """Why an initial design of a law of one model size sits at one menu entry."""
    return (
        f"law {law.name!r} fits one model size: the initial design is planned at the menu's "
        f"largest entry {entry_text(menu, largest_entry(menu))} (a law over model size and "
        "tokens, e.g. model 'scaling', spreads it over the sizes)"
    )


def spread_over_menu(batch: Batch, menu: Menu, law=None) -> Batch:
    """An initial design's batch with planned sizes (:func:`initial_entries` for ``law``, and a
    note when they are one entry); costs relative to the menu's cheapest entry."""
    pick = initial_entries(menu, len(batch), law)
    cands = Candidates(
        batch.mixtures,
        batch.candidates.train_domains,
        n_params=menu.n_params[pick],
        steps=menu.steps[pick],
        tokens=menu.tokens[pick],
        constraints=batch.candidates.constraints,
        costs=menu.cost[pick],
    )
    out = Batch(batch.strategy, batch.mixtures, np.arange(len(batch)), batch.score, cands)
    out.cost, out.notes = menu.cost[pick] / menu.unit, list(batch.notes)
    if law is not None and not spans_sizes(law):
        out.notes.append(one_size_note(law, menu))
    return out


def largest_entry(menu: Menu) -> int:
    """Index of the menu's largest entry: the largest size, at its most steps (the proxy
    nearest the target run)."""
    return int(full_runs(menu)[-1])


def entry_text(menu: Menu, entry: int) -> str:
    """One entry as ``SIZE@STEPS`` text (``410M@20000``)."""
    return f"{size_label(menu.n_params[entry])}@{menu.steps[entry]:g}"


def at_menu_entry(batch: Batch, menu: Menu) -> Batch:
    """A batch chosen without sizes (a single-scale strategy) planned at the menu's
    :func:`largest_entry`: every candidate gets its size, steps, tokens and cost, the chosen
    runs its cost relative to the menu's cheapest entry, and a note says so."""
    e = largest_entry(menu)
    n = len(batch.candidates)
    cands = replace(
        batch.candidates,
        n_params=np.full(n, menu.n_params[e]),
        steps=np.full(n, menu.steps[e]),
        tokens=np.full(n, menu.tokens[e]),
        costs=np.full(n, menu.cost[e]),
    )
    note = (
        f"{batch.strategy} chooses mixtures, not sizes: every run is planned at the menu's "
        f"largest entry {entry_text(menu, e)} (target-info chooses among the entries)"
    )
    rel = np.full(len(batch), menu.cost[e] / menu.unit)
    return replace(batch, candidates=cands, cost=rel, notes=[*batch.notes, note])


def check_target_tokens(
    target_tokens: float,
    target_scale: str,
    tokens_per_step: float | None = None,
    names: tuple[str, str] = ("target_tokens", "target_scale"),
) -> None:
    """OptionError naming both ``names`` unless ``target_tokens`` equals the tokens of
    ``target_scale`` (``SIZE@STEPS`` text: steps x ``tokens_per_step``, default
    :data:`~bayesmix.data.ye_logs.TOKENS_PER_STEP`; relative tolerance 1e-9)."""
    tps = float(TOKENS_PER_STEP) if tokens_per_step is None else tokens_per_step
    tokens = parse_scale(target_scale, tokens_per_step=tps)["tokens"]
    if not math.isclose(float(target_tokens), tokens, rel_tol=1e-9):
        raise errors.OptionError(
            f"{names[0]} {float(target_tokens):.10g} disagrees with {names[1]} {target_scale}: "
            f"{tokens / tps:.10g} steps x {tps:.10g} tokens per step = {tokens:.10g} tokens",
            hint=f"make them agree, e.g. {names[0]} {tokens:.10g}",
        )


def check_scale_law(belief: Belief) -> None:
    """OptionError unless the belief's law takes the model size and tokens as inputs and the
    belief is fixed at a target scale."""
    missing = [k for k in SCALE_INPUTS if k not in belief.draws.law.inputs]
    if missing:
        raise errors.OptionError(
            f"law {belief.draws.law.name!r} has no input {missing[0]!r}: multi-fidelity "
            "acquisition needs a law over mixture, model size and tokens",
            hint="fit a law such as 'scaling' to runs of several sizes",
        )
    if any(k not in belief.inputs for k in SCALE_INPUTS):
        raise errors.OptionError(
            "the belief has no target scale",
            hint="Belief.from_posterior(post, inputs={'n_params': N, 'tokens': D})",
        )


def scaled_objective(belief: Belief, mixtures, n_params, tokens) -> np.ndarray:
    """The objective per draw (S, n) of mixtures (n, M) trained at sizes and tokens (n,)."""
    r = np.atleast_2d(np.asarray(mixtures, float))
    shape = r.shape[:-1]
    inputs = {
        "n_params": np.broadcast_to(np.asarray(n_params, float), shape),
        "tokens": np.broadcast_to(np.asarray(tokens, float), shape),
    }
    with np.errstate(over="ignore", invalid="ignore"):
        loss = belief.draws.law.predict(r, belief.params, **inputs)
    return loss @ belief.weights


class TargetInfo(OptimumInfo):
    """Information about the target-scale optimum per unit of cost (module docstring).
    Candidates must carry sizes and tokens (:func:`menu_candidates`); pending runs are taken
    at ``pending_scale`` ((k, 2): n_params, tokens per pending run; default the candidates'
    largest size and tokens)."""

    name = "target-info"

    def __init__(self, n_groups: int = 8, cost_power: float = 1.0, refine: bool = False):
        super().__init__(n_groups, cost_power, refine)
        self.pending_scale: np.ndarray | None = None
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def _prepare(self, belief, candidates, existing, random_seed):
        check_scale_law(belief)
        if candidates.n_params is None or candidates.tokens is None:
            raise errors.OptionError(
                "target-info needs candidates with n_params and tokens",
                hint="cross the mixtures with a Menu (menu_candidates)",
            )
        super()._prepare(belief, candidates, existing, random_seed)  # the optimum's groups
        self._scale = (np.asarray(candidates.n_params), np.asarray(candidates.tokens))

    def _ensemble(self, belief, x):
        assert self._scale is not None  # set by _prepare
        n_cand = len(self._scale[0])
        n_pend = len(x) - n_cand
        if self.pending_scale is not None and len(self.pending_scale) == n_pend:
            pend = np.asarray(self.pending_scale, float).reshape(n_pend, 2)
        else:
            pend = np.tile([self._scale[0].max(), self._scale[1].max()], (n_pend, 1))
        n_params = np.concatenate([self._scale[0], pend[:, 0]])
        tokens = np.concatenate([self._scale[1], pend[:, 1]])
        values = scaled_objective(belief, x, n_params, tokens)
        return Ensemble(values, belief.objective_noise_var(), robust=True)

    def _score(self, ens):
        return group_information(ens.anom[..., 0], self.groups, float(ens.noise[0]))
