"""Named errors for bad input. Each says where (file, row or run, column) and what to do.

Every error is a ``BayesmixError`` (a ``ValueError``); the CLI prints ``str(err)`` as one line and
exits with status 2.
"""

from __future__ import annotations


class BayesmixError(ValueError):
    """Base class: a one-line, user-facing message built from location parts and a hint.

    Parameters
    ----------
    problem : str
        What is wrong.
    source : str, optional
        The file (or other input) it is in.
    row : int, optional
        The line number in ``source``.
    run : str, optional
        The run id.
    column : str, optional
        The column name.
    hint : str, optional
        What to do about it.
    param : str, optional
        The Python parameter at fault. The message names it as ``param=`` (``max_time=0 must
        be positive``); the CLI replaces that with the flag it comes from (``--max-time 0 must
        be positive``), so each message is written once for both.

    Returns
    -------
    BayesmixError
        ``str(err)`` is the one line ``"<source>, row <row>, run <run>, column <column>:
        <problem> (<hint>)"``, absent parts left out; the parts stay attributes.

    Examples
    --------
    >>> from bayesmix import BayesmixError
    >>> err = BayesmixError("not a number", source="runs.csv", row=3, column="loss.web",
    ...                     hint="use a decimal point")
    >>> str(err)
    "runs.csv, row 3, column 'loss.web': not a number (use a decimal point)"
    >>> isinstance(err, ValueError), err.row
    (True, 3)
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        row: int | None = None,
        run: str | None = None,
        column: str | None = None,
        hint: str | None = None,
        param: str | None = None,
    ):
        self.problem, self.source, self.row, self.run = problem, source, row, run
        self.column, self.hint, self.param = column, hint, param
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.run is not None:
            where.append(f"run {self.run!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        msg = (", ".join(where) + ": " if where else "") + self.problem
        if self.hint:
            msg += f" ({self.hint})"
        return msg.replace("\n", " ")


class EmptyInputError(BayesmixError):
    """The file or table has no data rows."""


class UnreadableFileError(BayesmixError):
    """The file does not exist, cannot be opened, or cannot be parsed in its format."""


class FormatError(BayesmixError):
    """The file parses but is not in a layout bayesmix knows (missing or unknown columns)."""


class NonNumericError(BayesmixError):
    """Text where a number is expected."""


class MissingValueError(BayesmixError):
    """A proportion or other required value is missing."""


class NegativeProportionError(BayesmixError):
    """A mixture proportion is below zero."""


class ProportionSumError(BayesmixError):
    """A run's proportions do not sum to 1 within the tolerance."""


class InconsistentMixtureError(BayesmixError):
    """The same run has different proportions (or model sizes) at different checkpoints."""


class NonFiniteLossError(BayesmixError):
    """A loss is inf or nan where a value was given."""


class NonPositiveLossError(BayesmixError):
    """A loss is zero or negative: cross-entropy losses are positive."""


class DuplicateRunError(BayesmixError):
    """The same run id (or run id and step) appears twice."""


class DomainNameError(BayesmixError):
    """A domain name is unknown, misspelt, or inconsistent between files."""


class NoLossesError(BayesmixError):
    """A run has no loss on any validation domain."""


class SpecError(BayesmixError):
    """A model specification (TOML) or prior is invalid."""


class PosteriorFileError(BayesmixError):
    """A posterior NetCDF file is missing, unreadable, or not written by bayesmix."""


class InfeasibleError(BayesmixError):
    """Mixture constraints admit no mixture."""


class LedgerError(BayesmixError):
    """An experiment ledger is missing, corrupt, or asked to do something its state forbids."""


class UnmatchedRunError(BayesmixError):
    """A run appears in one file of a pair (e.g. RegMix mixtures + losses) but not the other."""


class SimulationError(BayesmixError):
    """``bayesmix.simulate`` was given settings it cannot simulate (e.g. no domains, bad sizes)."""


class DesignError(InfeasibleError):
    """The feasible set cannot hold the requested number of distinct design mixtures."""


class OptionError(BayesmixError):
    """A command-line option has a malformed value (e.g. not DOMAIN=NUMBER)."""


class ObjectiveError(BayesmixError):
    """An optimisation objective, its weights or its baseline mixture is invalid."""


class ExtrapolationError(BayesmixError):
    """A prediction asked for a model size or token count far outside the fitted range."""


class ExtrapolationWarning(UserWarning):
    """A prediction at a model size or token count outside the fitted range (within limits)."""


class ImplausibleLossError(BayesmixError):
    """A loss is finite and positive but above the plausibility bound (``--max-loss``)."""


class TooFewRunsError(BayesmixError):
    """Fewer runs than the law needs to be identified (:attr:`bayesmix.laws.Law.min_runs`)."""


class OutputPathError(OptionError):
    """An output path is unusable: an input file, an existing result without ``--force``, a
    folder that cannot be written."""


class WriteError(BayesmixError):
    """Writing an output file failed (permissions, full disk); nothing was replaced."""


class GuaranteeError(InfeasibleError):
    """No mixture meets the guarantees on the posterior draws. ``guarantee``: the binding one;
    ``best_prob``: the highest probability of it reachable; ``mixture``: where (M,)."""

    def __init__(
        self,
        problem: str,
        *,
        guarantee=None,
        best_prob: float | None = None,
        mixture=None,
        hint: str | None = None,
    ):
        super().__init__(problem, hint=hint)
        self.guarantee, self.best_prob, self.mixture = guarantee, best_prob, mixture


class ProposalConflictError(LedgerError):
    """A proposal came within the minimum distance of a run recorded while it was being chosen
    (e.g. by a concurrent proposer); nothing was recorded."""


class DamagedLedgerError(LedgerError):
    """A cell of the ledger cannot be what bayesmix wrote (edited by hand or damaged): names the
    file, table, row and column."""
