"""What to do when a fit fails the diagnostics gate: sample again, changed, within a budget.

Two pieces. :func:`next_settings` is the policy, a pure function: from the gate's report of one
attempt and that attempt's sampler settings it chooses the next attempt's settings and says why
in one line (divergences: a higher ``target_accept`` and longer tuning; maximum tree depth or
low E-BFMI: longer tuning; R-hat or ESS: more draws, scaled by how far the ESS is from its floor
or R-hat from its bound, and longer tuning), or returns None when nothing sensible is left to
change.
:func:`sample_to_gate` is the driver: it samples, runs the gate, asks the policy and samples
afresh (a seed derived from the user's and the attempt number) until the gate passes, the next
attempt is predicted to overrun the time budget, the policy gives up or ``max_attempts`` were
made. It returns the passing attempt, else the one with the best gate, and a record of every
attempt (:meth:`Attempt.record`), which :func:`bayesmix.inference.fitting.fit` and the nested
pipeline store with their results.

Every retry is a fresh sampling: nutpie cannot resume a finished sampler's adaptation, so
"continue tuning" means tuning again, longer, and a stuck chain is not restarted alone; a retry
for R-hat or ESS is also judged with the previous attempt's chains (:func:`poolable`). When
the policy's retry for R-hat or ESS would overrun the budget, an attempt of the previous one's
own size is run instead if it fits: pooled, the two give twice the chains for the time of one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bayesmix import errors
from bayesmix.inference.chains import drop_chains, log_density, lost_chains, pool_chains
from bayesmix.posterior.diagnostics import BFMI_MIN, ESS_PER_CHAIN, RHAT_MAX, Diagnostics, diagnose

#: Seconds one fit may spend sampling and re-sampling towards the gate (every attempt, the
#: gate's own figures included; compilation excluded). ``BAYESMIX_MAX_TIME`` overrides it.
DEFAULT_MAX_TIME = 600.0
#: Environment variable that sets the default budget (e.g. ``0`` in a test suite: one attempt).
MAX_TIME_ENV = "BAYESMIX_MAX_TIME"
#: At most this many samplings per fit (the first included). The time budget is what bounds
#: the work; this only stops a policy going round. ``make demo``'s 8-run round needs 5: two
#: rungs of ``target_accept`` (1-3 divergences centred), the noncentred form (ESS 288 at
#: ``b_sigma``), more draws (R-hat 1.0105), more again; 57 s of sampling for the first four.
MAX_ATTEMPTS = 6
#: ``target_accept`` steps taken after divergences (the next rung above the current value).
TARGET_ACCEPT_LADDER = (0.9, 0.95, 0.98, 0.99)
#: A centred hierarchy still divergent at this ``target_accept`` is refitted noncentred: a
#: smaller step often removes a few divergences of an informed centred fit at once, while the
#: noncentred form of such a fit mixes slower (demo round 3, 20 runs: 2 divergences at 0.95;
#: noncentred at 0.98 had none but tree-depth hits and ESS 230-345 through two more attempts).
SWITCH_FORM_AT = 0.98
#: Largest factor on the draws in one retry, and a margin on the ESS shortfall (the ESS
#: estimate of a short run is noisy and grows less than linearly when chains mix slowly).
MAX_DRAWS_FACTOR = 4.0
ESS_MARGIN = 1.2
#: Upper bounds on draws and tuning steps per chain that a retry may ask for.
MAX_DRAWS = 20_000
MAX_TUNE = 20_000


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler settings a retry may change: draws and tuning steps per chain, NUTS's
    target acceptance rate, and the number of chains (kept)."""

    draws: int
    tune: int
    target_accept: float
    chains: int
    #: The hierarchy's form, "centered" or "noncentered", for laws that offer both
    #: (:attr:`bayesmix.laws.base.Law.has_noncentered`); "" where there is no choice.
    parameterization: str = ""

    def as_dict(self) -> dict:
        out: dict = {
            "draws": self.draws,
            "tune": self.tune,
            "target_accept": self.target_accept,
            "chains": self.chains,
        }
        if self.parameterization:
            out["parameterization"] = self.parameterization
        return out

    @property
    def total_draws(self) -> int:
        """Draws of every chain, tuning included: what one sampling costs."""
        return self.chains * (self.draws + self.tune)


# ---------------------------------------------------------------------------------- budget
#: Default seconds each stage fit of :func:`bayesmix.scaling.pipeline.nested_fit` may spend
#: sampling again towards its gate: a target makes J + 1 stage fits after the shared stage 1
#: (5 at J = 4) and the backtests three times as many, so the single fit's 600 s would let one
#: pipeline run for an hour. Why 180 s: a stage-3 fit's first attempt takes 25-100 s on 2 cores
#: (5Mix, load 0-4); at 120 s a same-size retry to pool with it often did not fit.
STAGE_MAX_TIME = 180.0
#: Said by a retry of the previous attempt's own size, run when the policy's retry would
#: overrun the budget: both attempts' chains are judged together (:func:`poolable`).
SAME_SIZE = "a same-size attempt"
#: Draws and tuning steps per chain of every pipeline stage fit (2 chains). Why more draws than
#: tuning: with 2 x 500 draws the gate's R-hat (<= 1.01, max over every quantity) failed by chance
#: while the bulk ESS was 1,100-2,700 (5Mix, seed 1: stage 1 and all four stage-2 fits needed a
#: 2nd attempt, stage 3 failed 4 of 4 in its budget); at 2 x 1000 draws after 500 tuning steps,
#: seed 2 passed all 9 stage fits, stage 2 and 3 at their first attempt, in about the same time.
PIPELINE_DRAWS = 1000
PIPELINE_TUNE = 500


def check_max_time(max_time: float | None) -> float:
    """The time budget in seconds: ``max_time``, or when None the environment's
    ``BAYESMIX_MAX_TIME``, else :data:`DEFAULT_MAX_TIME`. Raises BayesmixError unless it is a
    number >= 0 (``math.inf``: no time limit, ``max_attempts`` still applies)."""
    name = "max_time"
    if max_time is None:
        text = os.environ.get(MAX_TIME_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_TIME
        name = MAX_TIME_ENV
        try:
            max_time = float(text)
        except ValueError:
            raise errors.BayesmixError(
                f"{MAX_TIME_ENV} must be a number of seconds >= 0, got {text!r}"
            ) from None
    bad = isinstance(max_time, bool) or not isinstance(max_time, (int, float, np.number))
    if bad or math.isnan(float(max_time)) or float(max_time) < 0:
        raise errors.OptionError(
            f"{name}={max_time!r} is not a number of seconds >= 0",
            param="max_time" if name == "max_time" else None,
        )
    value = float(max_time)
    return value


def attempt_seed(seed: int | None, attempt: int) -> int | None:
    """The sampler seed of attempt ``attempt`` (1-based): the user's ``seed`` for the first,
    then a number derived from (seed, attempt) by NumPy's SeedSequence; None stays None."""
    if seed is None or attempt == 1:
        return seed
    return int(np.random.SeedSequence([int(seed) % 2**63, int(attempt)]).generate_state(1)[0])


def stage_max_time(max_time: float | None) -> float:
    """The budget of each stage fit: ``max_time`` checked, or when None the environment's
    ``BAYESMIX_MAX_TIME`` capped at :data:`STAGE_MAX_TIME` (:func:`check_max_time`)."""
    if max_time is not None:
        return check_max_time(max_time)
    return min(check_max_time(None), STAGE_MAX_TIME)


def attempts_note(n_attempts: int, max_time: float) -> str:
    """``"1 attempt, max_time 0 s"``: how many samplings a fit tried, within what budget."""
    return f"{n_attempts} attempt{'s' if n_attempts != 1 else ''}, max_time {max_time:g} s"


def say_progress(line: str) -> None:
    """A progress line on stderr (the ``progress`` of :func:`sample_to_gate` in fits)."""
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- policy
def _ceil(x: float) -> int:
    """The whole number at or above ``x``, ignoring float noise (1000 x 2.4 is 2400)."""
    return math.ceil(round(x, 6))


def _next_rung(target_accept: float) -> float | None:
    """The first value of :data:`TARGET_ACCEPT_LADDER` above ``target_accept``, or None."""
    return next((t for t in TARGET_ACCEPT_LADDER if t > target_accept + 1e-9), None)


def next_settings(
    report: Diagnostics, settings: SamplerSettings
) -> tuple[SamplerSettings, str] | None:
    """The settings of the next attempt after a failed gate, and why, in one line.

    Parameters
    ----------
    report : Diagnostics
        The gate's report of the attempt (thresholds of :mod:`bayesmix.posterior.diagnostics`).
    settings : SamplerSettings
        That attempt's settings.

    Returns
    -------
    (SamplerSettings, str) or None
        The next settings and the reason, e.g. ``"ESS 120 < 400: draws 1000 -> 4000, tune
        1000 -> 1500"`` (ESS: the smaller of min bulk and min tail ESS); None when the gate
        passed or nothing sensible is left (only divergences, already at the top of
        :data:`TARGET_ACCEPT_LADDER`; or every setting the failures call for at its bound).

    Notes
    -----
    Each failure asks for a change; the largest change of each setting is taken:

    * divergences: ``target_accept`` to the next rung of the ladder and tune x1.5 (a smaller
      step size, adapted over more draws); a centred hierarchy still divergent at
      :data:`SWITCH_FORM_AT` also takes the noncentred form
      (the same posterior; divergences of a centred hierarchy are the funnel of a pooled scale
      that few domains or runs leave free, which the noncentred form removes);
    * maximum tree depth hits or E-BFMI < 0.3: tune x2 (the mass matrix is not adapted yet);
    * R-hat > 1.01 or bulk/tail ESS below 100 per chain: draws x max(1.5, 1.2 x floor / ESS,
      1.2 x (R-hat - 1) / 0.01), at most x4, and tune x1.5 (ESS grows about linearly with the
      draws of chains that mix, and R-hat - 1 shrinks about as their inverse: x1.5 from R-hat
      1.015 left the nested pipeline's stage fits at 1.010-1.014 on 5Mix).
    """
    if report.ok:
        return None
    causes: list[str] = []
    tune_factor, draws_factor = 1.0, 1.0
    target_accept = settings.target_accept
    parameterization = settings.parameterization
    if report.divergences:
        causes.append(f"{report.divergences} divergences")
        rung = _next_rung(settings.target_accept)
        if rung is not None:
            target_accept = rung
            tune_factor = max(tune_factor, 1.5)
        if parameterization == "centered" and settings.target_accept >= SWITCH_FORM_AT:
            parameterization = "noncentered"
    if report.treedepth_hits:
        causes.append(f"{report.treedepth_hits} tree-depth hits")
        tune_factor = max(tune_factor, 2.0)
    if np.isfinite(report.min_bfmi) and report.min_bfmi < BFMI_MIN:
        causes.append(f"E-BFMI {report.min_bfmi:.2f}")
        tune_factor = max(tune_factor, 2.0)
    floor = ESS_PER_CHAIN * report.chains
    ess = np.nanmin([report.min_ess_bulk, report.min_ess_tail, np.inf])
    rhat_bad = bool(np.isfinite(report.max_rhat) and report.max_rhat > RHAT_MAX)
    ess_bad = bool(ess < floor)
    if rhat_bad:
        causes.append(f"R-hat {report.max_rhat:.3f}")
    if ess_bad:
        causes.append(f"ESS {ess:.0f} < {floor:.0f}")
    if rhat_bad or ess_bad:
        shortfall = 1.0
        if ess_bad:
            shortfall = ESS_MARGIN * floor / ess if ess > 0 else MAX_DRAWS_FACTOR
        if rhat_bad:  # R-hat - 1 shrinks about as 1 / draws in chains that mix
            shortfall = max(shortfall, ESS_MARGIN * (report.max_rhat - 1.0) / (RHAT_MAX - 1.0))
        draws_factor = max(draws_factor, min(MAX_DRAWS_FACTOR, max(1.5, shortfall)))
        tune_factor = max(tune_factor, 1.5)
    new = replace(
        settings,
        draws=min(MAX_DRAWS, max(settings.draws, _ceil(settings.draws * draws_factor))),
        tune=min(MAX_TUNE, max(settings.tune, _ceil(settings.tune * tune_factor))),
        target_accept=target_accept,
        parameterization=parameterization,
    )
    changes = [
        f"{name} {getattr(settings, name):g} -> {getattr(new, name):g}"
        for name in ("target_accept", "draws", "tune")
        if getattr(new, name) != getattr(settings, name)
    ]
    if new.parameterization != settings.parameterization:
        changes.append(f"hierarchy {settings.parameterization} -> {new.parameterization}")
    if not changes:
        return None
    return new, f"{', '.join(causes) or 'gate failed'}: {', '.join(changes)}"


# ---------------------------------------------------------------------------------- driver
@dataclass
class Attempt:
    """One sampling towards the gate: its settings and seed, sampling seconds, the gate's
    report, why it was made (``why``) and what came after it (``next``: the reason of the
    next attempt, or why the driver stopped)."""

    number: int
    settings: SamplerSettings
    seed: int | None
    sample_s: float
    diagnostics: Diagnostics
    why: str
    next: str = ""
    used: bool = False
    dropped: str = ""
    pooled: str = ""  # what was pooled (:func:`poolable`); ``diagnostics`` is then pooled

    def record(self) -> dict:
        """JSON-friendly summary (non-finite figures as None)."""

        def finite(x: float) -> float | None:
            return round(float(x), 4) if np.isfinite(x) else None

        d = self.diagnostics
        return {
            "attempt": self.number,
            **self.settings.as_dict(),
            "seed": self.seed,
            "sample_s": round(self.sample_s, 3),
            "divergences": d.divergences,
            "max_rhat": finite(d.max_rhat),
            "min_ess_bulk": finite(d.min_ess_bulk),
            "failed": list(d.failed),
            "why": self.why,
            "next": self.next,
            "used": self.used,
            "dropped_chains": self.dropped,
            "pooled": self.pooled,
        }


def record_line(record: dict) -> str:
    """One line of an attempt's stored record (:meth:`Attempt.record`): settings, seconds,
    gate figures, what came next."""
    rhat = "n/a" if record["max_rhat"] is None else f"{record['max_rhat']:.3f}"
    ess = "n/a" if record["min_ess_bulk"] is None else f"{record['min_ess_bulk']:.0f}"
    failed = record["failed"]
    return (
        f"attempt {record['attempt']}{' (used)' if record['used'] else ''}: "
        f"{record['draws']} draws after {record['tune']} tuning, target_accept "
        f"{record['target_accept']:g}, seed {record['seed']}, {record['sample_s']:.1f} s; "
        f"{record['divergences']} divergent, max R-hat {rhat}, min bulk ESS {ess}; "
        + ("passed" if not failed else f"failed {len(failed)} check(s)")
        + (f"; {record['dropped_chains']}" if record.get("dropped_chains") else "")
        + (f"; {record['pooled']}" if record.get("pooled") else "")
        + f"; then: {record['next']}"
    )


@dataclass
class GateResult:
    """What :func:`sample_to_gate` returns: the chosen attempt's tree, the extra value its
    ``sample_once`` returned and its report, plus every attempt in order."""

    tree: Any
    extra: Any
    diagnostics: Diagnostics
    attempts: list[Attempt]

    @property
    def used(self) -> Attempt:
        return next(a for a in self.attempts if a.used)

    @property
    def sample_s(self) -> float:
        """Sampling seconds of every attempt."""
        return sum(a.sample_s for a in self.attempts)

    def records(self) -> list[dict]:
        return [a.record() for a in self.attempts]

    def settings(self, max_time: float) -> dict:
        """The sampler settings a fit stores: the used attempt's draws, tune, chains, seed and
        target_accept, the budget and every attempt's record."""
        used = self.used
        pooled = bool(used.pooled)  # the draws and chains of two samplings
        return {
            "draws": used.diagnostics.draws if pooled else used.settings.draws,
            "tune": used.settings.tune,
            "chains": used.diagnostics.chains if pooled else used.settings.chains,
            "seed": used.seed,  # the stored settings keep their key (files of older versions)
            "target_accept": used.settings.target_accept,
            **(
                {"parameterization": used.settings.parameterization}
                if used.settings.parameterization
                else {}
            ),
            "max_time": max_time,
            "attempts": self.records(),
        }


def gate_key(report: Diagnostics) -> tuple[int, float, float]:
    """Sort key of reports, best first: fewest failed checks, then lowest max R-hat, then
    highest min bulk ESS (NaN figures last)."""
    rhat = report.max_rhat if np.isfinite(report.max_rhat) else math.inf
    ess = report.min_ess_bulk if np.isfinite(report.min_ess_bulk) else -math.inf
    return (len(report.failed), rhat, -ess)


def sample_to_gate(
    sample_once: Callable[[SamplerSettings, int | None], tuple[Any, Any]],
    first_settings: SamplerSettings,
    *,
    max_time: float,
    seed: int | None,
    max_attempts: int = MAX_ATTEMPTS,
    check: Callable[[Any], Diagnostics] = diagnose,
    policy: Callable[
        [Diagnostics, SamplerSettings], tuple[SamplerSettings, str] | None
    ] = next_settings,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    pool: Callable[[Any, Any], Any] | None = pool_chains,
) -> GateResult:
    """Sample until the diagnostics gate passes or the budget is spent.

    Parameters
    ----------
    sample_once : callable
        ``sample_once(settings, seed) -> (tree, extra)``: one fresh sampling (``tree`` has the
        groups ``posterior`` and ``sample_stats``; ``extra`` is handed back untouched).
    first_settings : SamplerSettings
        The settings of the first attempt (the user's).
    max_time : float
        Seconds (>= 0) that all attempts together may take, gates included: an attempt is
        started only when its predicted duration (the previous attempt's seconds per draw,
        tuning included, times its draws) fits in what is left. 0: one attempt.
    seed : int or None
        The user's seed: attempt 1 uses it, later ones :func:`attempt_seed`.
    max_attempts : int, default MAX_ATTEMPTS
        At most this many samplings.
    check, policy : callable
        The gate (:func:`bayesmix.posterior.diagnostics.diagnose`) and the policy
        (:func:`next_settings`).
    progress : callable, optional
        Called with one line when a retry starts (and why) and when the driver gives up.
    clock : callable
        Seconds, monotonic (tests pass a fake clock).
    pool : callable or None
        ``pool(previous tree, tree)``: both attempts' chains in one tree, judged when
        :func:`poolable` (default :func:`~bayesmix.inference.chains.pool_chains`).

    Returns
    -------
    GateResult
        The first attempt that passed, else the best by :func:`gate_key`; every attempt's
        record (settings, seed, seconds, gate figures, why it ran, what came next). An
        attempt with fewer draws than asked for (sampling interrupted: nutpie keeps the draws
        so far on Ctrl-C) is the last.
    """
    max_time = check_max_time(max_time)
    if int(max_attempts) < 1:
        raise errors.BayesmixError(f"max_attempts must be >= 1, got {max_attempts}")
    start = clock()
    attempts: list[Attempt] = []
    best: tuple[Any, Any, Attempt] | None = None
    previous: tuple[Any, Attempt] | None = None
    settings, why = first_settings, "first attempt"
    while True:
        number = len(attempts) + 1
        tree, extra, attempt = _sample_and_check(
            sample_once, check, settings, attempt_seed(seed, number), number, why, progress, clock
        )
        attempts.append(attempt)
        own = tree
        if pool is not None and previous is not None and poolable(previous[1], attempt):
            tree = _pooled(pool, check, previous, tree, attempt)
        if best is None or gate_key(attempt.diagnostics) < gate_key(best[2].diagnostics):
            best = (tree, extra, attempt)
        previous = (own, attempt)
        del tree, extra, own  # the best attempt's draws and the last attempt's are kept
        step = _next_step(
            attempt,
            max_attempts,
            policy,
            left=max_time - (clock() - start),
            max_time=max_time,
            pool_retry=pool is not None,
        )
        if step is None:
            break
        settings, why, line = step
        if progress is not None:
            progress(line)
    assert best is not None  # at least one attempt ran
    tree, extra, chosen = best
    chosen.used = True
    if progress is not None and len(attempts) > 1:
        outcome = "passed" if chosen.diagnostics.ok else "still failing; keeping the best"
        progress(f"gate {outcome}: attempt {chosen.number} of {len(attempts)} used")
    return GateResult(tree, extra, chosen.diagnostics, attempts)


def poolable(before: Attempt, after: Attempt) -> bool:
    """Whether two attempts sampled the same posterior and may be judged together: the later
    failed, both had the same model form, chains and ``target_accept`` (a retry for R-hat or
    ESS changes only draws and tuning), no divergences and no dropped chains."""
    a, b = before.settings, after.settings
    return (
        not after.diagnostics.ok
        and (a.chains, a.target_accept, a.parameterization)
        == (b.chains, b.target_accept, b.parameterization)
        and before.diagnostics.divergences == 0
        and after.diagnostics.divergences == 0
        and not before.dropped
        and not after.dropped
    )


def _pooled(pool, check, previous: tuple[Any, Attempt], tree, attempt: Attempt):
    """The pool of the previous attempt's chains and ``tree``'s when it passes the gate
    (``attempt`` then carries the pooled report and says what was pooled), else ``tree``: a
    failing pool is not what the policy plans the next attempt from."""
    merged = pool(previous[0], tree)
    report = check(merged)
    if not report.ok:
        return tree
    attempt.pooled = (
        f"chains of attempts {previous[1].number}-{attempt.number} pooled "
        f"({report.chains} x {report.draws} draws): passed"
    )
    attempt.diagnostics = report
    return merged


def _sample_and_check(sample_once, check, settings, seed, number, why, progress, clock):
    """One attempt: (tree without lost chains, ``sample_once``'s extra, its Attempt record)."""
    began = clock()
    tree, extra = sample_once(settings, seed)
    sample_s = clock() - began
    logp = log_density(tree)
    lost, dropped = lost_chains(logp) if logp is not None else ([], "")
    if lost:
        tree = drop_chains(tree, lost)
        if progress is not None:
            progress(f"attempt {number}: {dropped}")
    report = check(tree)
    return tree, extra, Attempt(number, settings, seed, sample_s, report, why, dropped=dropped)


def _same_size_poolable(attempt: Attempt) -> bool:
    """Whether a same-size attempt after ``attempt`` could pass pooled with it: the gate
    failed on R-hat or ESS alone (no divergences, every chain kept), and ``attempt`` was not
    itself such a retry (its own pool already failed)."""
    d = attempt.diagnostics
    return (
        d.divergences == 0
        and not d.treedepth_hits
        and not (np.isfinite(d.min_bfmi) and d.min_bfmi < BFMI_MIN)
        and not attempt.dropped
        and SAME_SIZE not in attempt.why
    )


def _next_step(
    attempt: Attempt,
    max_attempts: int,
    policy,
    *,
    left: float,
    max_time: float,
    pool_retry: bool = False,
) -> tuple[SamplerSettings, str, str] | None:
    """After ``attempt``: (next settings, why, a progress line), or None to stop; records in
    ``attempt.next`` what comes next. ``left``: seconds of ``max_time`` left. ``pool_retry``:
    when the policy's retry would overrun ``left`` but an attempt of ``attempt``'s own size
    fits, run that one (the driver judges it pooled with ``attempt``: twice the chains)."""
    report, settings, number = attempt.diagnostics, attempt.settings, attempt.number
    if report.ok:
        attempt.next = "gate passed"
        return None
    if report.draws < settings.draws:  # nutpie returns the draws so far on Ctrl-C
        attempt.next = f"stopped: sampling interrupted ({report.draws} of {settings.draws} draws)"
        return None
    if number >= max_attempts:
        attempt.next = f"stopped: {number} attempts made (at most {max_attempts})"
        return None
    proposal = policy(report, settings)
    if proposal is None:
        attempt.next = "stopped: nothing left to change for these failures"
        return None
    new, reason = proposal
    rate = attempt.sample_s / max(settings.total_draws, 1)  # seconds per draw, tuning included
    predicted = rate * new.total_draws
    if predicted > left and pool_retry and _same_size_poolable(attempt):
        same = rate * settings.total_draws  # a same-size attempt, judged pooled with this one
        if same <= left:
            reason = (
                f"{reason.split(':')[0]}: the planned retry would take ~{predicted:.0f} s; "
                f"{SAME_SIZE} to pool with attempt {number}"
            )
            new, predicted = settings, same
    if predicted > left:
        attempt.next = (
            f"stopped: the next attempt ({reason}) would take ~{predicted:.0f} s, "
            f"{max(left, 0.0):.0f} s of max_time {max_time:g} s left"
        )
        return None
    attempt.next = f"retry: {reason}"
    line = (
        f"gate failed on attempt {number} ({'; '.join(report.failed)}); attempt "
        f"{number + 1}: {reason} (~{predicted:.0f} s predicted, {left:.0f} s of "
        f"max_time left)"
    )
    return new, reason, line
