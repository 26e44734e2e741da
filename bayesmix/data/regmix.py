"""RegMix files (Liu et al. 2024): a mixture CSV (``index``, ``train_*``) and a loss CSV
(``index``, ``metric/*_val_loss``), joined on ``index`` into one run table.

Files are paired by their columns and names (``train_mixture_1m.csv`` +
``train_pile_loss_1m.csv``); run ids are the index, prefixed by the mixture file's name before
``mixture``. An error found on the joined table is pointed back at the file, line and column it
came from (:func:`relocate_error`).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.file_reading import csv_header, read_csv_table, strip_affixes
from bayesmix.data.table import RunTable, check_never_together
from bayesmix.data.validation import LOSS_PREFIX, MIX_PREFIX


def _regmix_role(path: Path, frame: pd.DataFrame) -> str:
    """'mixtures' or 'losses' from the columns; FormatError for anything else."""
    cols = [str(c) for c in frame.columns]
    if "index" not in cols:
        raise errors.FormatError(
            "no 'index' column",
            source=str(path),
            hint="a RegMix file starts with index, then train_* or metric/*_val_loss columns",
        )
    data = [c for c in cols if c != "index"]
    if data and all(c.startswith("train_") for c in data):
        return "mixtures"
    if data and all(c.startswith("metric/") for c in data):
        return "losses"
    odd = next((c for c in data if not c.startswith(("train_", "metric/"))), None)
    if odd is not None:
        raise errors.FormatError(
            f"unexpected column {odd!r}",
            source=str(path),
            column=odd,
            hint="RegMix mixture files have train_* columns, loss files metric/*_val_loss columns",
        )
    raise errors.FormatError(
        "mixes train_* and metric/* columns",
        source=str(path),
        hint="keep proportions and losses in two files",
    )


def _pair_key(path: Path) -> str:
    """A file name without its role words: the key that pairs a mixture and a loss file."""
    words = [
        w
        for w in re.split(r"[_\-. ]+", path.stem.lower())
        if w and w not in {"mixture", "mixtures", "mix", "pile", "loss", "losses"}
    ]
    return "_".join(words)


def pair_regmix(paths: list[Path]) -> list[tuple[Path, Path]]:
    """Split files into (mixtures, losses) pairs by their columns and names."""
    mixtures: list[Path] = []
    losses: list[Path] = []
    for path in paths:
        header = csv_header(path)
        role = _regmix_role(path, pd.DataFrame(columns=header))
        (mixtures if role == "mixtures" else losses).append(path)
    if not mixtures or not losses:
        have = "mixture" if mixtures else "loss"
        raise errors.FormatError(
            f"a RegMix load needs a mixture file and a loss file; got only {have} files",
            source=str(paths[0]),
            hint="pass both, e.g. train_mixture_1m.csv train_pile_loss_1m.csv",
        )
    if len(mixtures) == 1 and len(losses) == 1:
        return [(mixtures[0], losses[0])]
    by_key: dict[str, list[Path]] = {}
    for path in losses:
        by_key.setdefault(_pair_key(path), []).append(path)
    pairs = []
    for mix in mixtures:
        partner = by_key.get(_pair_key(mix), [])
        if len(partner) != 1:
            raise errors.FormatError(
                "cannot tell which loss file belongs to this mixture file",
                source=str(mix),
                hint="name pairs alike (train_mixture_1m.csv + train_pile_loss_1m.csv) or load "
                "one pair at a time",
            )
        pairs.append((mix, partner[0]))
    unused = set(losses) - {loss for _, loss in pairs}
    if unused:
        raise errors.FormatError(
            "no mixture file for this loss file",
            source=str(min(unused)),
            hint="pass its mixture file too",
        )
    return pairs


def regmix_domain(column: str) -> str:
    """Domain name of a RegMix column: ``train_the_pile_pile_cc`` and
    ``metric/the_pile_pile_cc_val_loss`` are both ``pile_cc``."""
    if column.startswith("train_"):
        return strip_affixes(column, ("train_", "the_pile_"))
    return strip_affixes(column, ("metric/", "the_pile_"), ("_val_loss", "_loss"))


def _run_prefix(mix_path: Path) -> str:
    """Run ids are the index, prefixed by the mixture file's name before 'mixture' (``train_``)."""
    stem = mix_path.stem
    pos = stem.lower().find("mixture")
    return stem[:pos] if pos > 0 else ""


def _regmix_ids(path: Path, frame: pd.DataFrame, lines: np.ndarray) -> list[str]:
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for value, line in zip(frame["index"].tolist(), lines):
        text = (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(value).strip()
        )
        if not text:
            raise errors.MissingValueError(
                "index is empty",
                source=str(path),
                row=int(line),
                column="index",
                hint="give every row an index",
            )
        if text in first_line:
            raise errors.DuplicateRunError(
                f"index {text!r} appears twice (first on row {first_line[text]})",
                source=str(path),
                row=int(line),
                column="index",
                hint="give each run one row",
            )
        first_line[text] = int(line)
        ids.append(text)
    return ids


def load_regmix_pair(
    mix_path: Path, loss_path: Path, renormalize, tolerance, notes, max_loss
) -> RunTable:
    """One RegMix pair as a validated RunTable (source ``"<mixtures> + <losses>"``); the two
    paths may come in either order. Notes (renormalised rows) go to ``notes``."""
    mix, mix_lines = read_csv_table(mix_path, "index")
    loss, loss_lines = read_csv_table(loss_path, "index")
    for path, frame in ((mix_path, mix), (loss_path, loss)):
        if frame.empty:
            raise errors.EmptyInputError(
                "no data rows", source=str(path), hint="a run table needs at least one run"
            )
    if _regmix_role(mix_path, mix) != "mixtures":
        mix_path, loss_path, mix, loss = loss_path, mix_path, loss, mix
        mix_lines, loss_lines = loss_lines, mix_lines
    mix_ids = _regmix_ids(mix_path, mix, mix_lines)
    loss_ids = _regmix_ids(loss_path, loss, loss_lines)
    _check_same_index(mix_ids, mix_lines, mix_path, loss_ids, loss_lines, loss_path)
    rename_mix, rename_loss, col_of = _domain_columns(mix, mix_path, loss, loss_path)

    loss_row = {k: i for i, k in enumerate(loss_ids)}
    order = [loss_row[k] for k in mix_ids]
    prefix = _run_prefix(mix_path)
    merged = pd.concat(
        [
            pd.DataFrame({"run": [prefix + k for k in mix_ids]}),
            mix.drop(columns="index").rename(columns=rename_mix).reset_index(drop=True),
            loss.drop(columns="index")
            .rename(columns=rename_loss)
            .iloc[order]
            .reset_index(drop=True),
        ],
        axis=1,
    )
    mix_line = dict(zip(merged["run"], mix_lines.tolist()))
    loss_line = {prefix + k: int(loss_lines[loss_row[k]]) for k in mix_ids}
    try:
        table = RunTable.from_frame(
            merged,
            source=str(mix_path),
            row_numbers=[int(x) for x in mix_lines],
            renormalize=renormalize,
            tolerance=tolerance,
            report=notes,
            max_loss=max_loss,
        )
    except errors.BayesmixError as err:
        raise _relocate_error(err, col_of, mix_path, loss_path, mix_line, loss_line) from None
    check_never_together(table.to_tidy(), str(loss_path), [loss_line[r] for r in table.runs])
    return RunTable(
        table.to_tidy(), table.train_domains, table.eval_domains, source=f"{mix_path} + {loss_path}"
    )


def _check_same_index(mix_ids, mix_lines, mix_path, loss_ids, loss_lines, loss_path) -> None:
    """Every index value in both files (UnmatchedRunError naming the first one missing)."""
    loss_set = set(loss_ids)
    for k, line in zip(mix_ids, mix_lines):
        if k not in loss_set:
            raise errors.UnmatchedRunError(
                f"index {k!r} (row {line} of {mix_path}) has no losses in {loss_path}",
                source=str(loss_path),
                run=k,
                column="index",
                hint="both files need the same index values",
            )
    mix_set = set(mix_ids)
    for k, line in zip(loss_ids, loss_lines):
        if k not in mix_set:
            raise errors.UnmatchedRunError(
                f"index {k!r} has losses but no mixture in {mix_path}",
                source=str(loss_path),
                row=int(line),
                run=k,
                column="index",
                hint="both files need the same index values",
            )


def _domain_columns(mix, mix_path, loss, loss_path):
    """The tidy names of both files' columns: ``(rename_mix, rename_loss, col_of)``, the
    renamings ``{column: mix.<domain> / loss.<domain>}`` and ``{tidy name: (file, column)}``
    (where an error on the joined table came from); one column per domain, and no validation
    name a near-miss of a training name."""
    col_of: dict[str, tuple[Path, str]] = {}
    rename_mix: dict[str, str] = {}
    rename_loss: dict[str, str] = {}
    for frame, prefix, kind, path, rename in (
        (mix, MIX_PREFIX, "training", mix_path, rename_mix),
        (loss, LOSS_PREFIX, "validation", loss_path, rename_loss),
    ):
        for col in frame.columns[frame.columns != "index"]:
            new = prefix + regmix_domain(col)
            if new in col_of:
                raise errors.DomainNameError(
                    f"two columns name {kind} domain {new[len(prefix) :]!r}",
                    source=str(path),
                    column=col,
                    hint="each domain needs one column",
                )
            rename[col], col_of[new] = new, (path, col)
    train = [c[len(MIX_PREFIX) :] for c in rename_mix.values()]
    evals = [c[len(LOSS_PREFIX) :] for c in rename_loss.values()]
    _check_partner_names(train, evals, loss_path, rename_loss)
    return rename_mix, rename_loss, col_of


def _relocate_error(err, col_of, mix_path, loss_path, mix_line, loss_line):
    """Point an error raised on the merged frame at the file, row and column it came from."""
    loss_side = (err.column or "").startswith(LOSS_PREFIX) or isinstance(
        err,
        (
            errors.NonFiniteLossError,
            errors.NonPositiveLossError,
            errors.ImplausibleLossError,
            errors.NoLossesError,
        ),
    )
    path = loss_path if loss_side else mix_path
    column = col_of.get(err.column, (path, err.column))[1] if err.column else None
    row = None
    if err.run is not None:
        prefix = _run_prefix(mix_path)
        row = (loss_line if loss_side else mix_line).get(err.run)
        run = err.run[len(prefix) :] if prefix and err.run.startswith(prefix) else err.run
    else:
        run = None
    return type(err)(err.problem, source=str(path), row=row, run=run, column=column, hint=err.hint)


def _check_partner_names(train, evals, loss_path, rename_loss) -> None:
    """A validation name that is a near-miss of a training name is a misspelling."""
    back = {v[len(LOSS_PREFIX) :]: k for k, v in rename_loss.items()}
    for name in evals:
        if name in train:
            continue
        close = difflib.get_close_matches(name, train, n=1, cutoff=0.9)
        if close:
            raise errors.DomainNameError(
                f"validation domain {name!r} is not a training domain but looks like {close[0]!r}",
                source=str(loss_path),
                column=back.get(name, name),
                hint=f"spell it {close[0]!r} in both files",
            )
