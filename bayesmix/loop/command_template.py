"""The training command template of ``bayesmix run``: its placeholders, their checks and
their values (shell-quoted), including each run's planned model size and steps."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from bayesmix import errors

#: Placeholders of the command template.
PLACEHOLDERS = ("run", "mixture_json", "mixture_file", "out", "workdir", "n_params", "steps")
_PLACEHOLDER_RE = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_template(template: str) -> None:
    """OptionError unless ``template`` is a non-empty command using only known placeholders
    (``${VAR}`` shell expansions are left alone) and naming ``{out}``, where the job must
    write its result."""
    if not template or not template.strip():
        raise errors.OptionError("--command is empty: give the training command template")
    unknown = sorted({m for m in _PLACEHOLDER_RE.findall(template) if m not in PLACEHOLDERS})
    if unknown:
        raise errors.OptionError(
            f"unknown placeholder(s) in --command: {', '.join('{' + u + '}' for u in unknown)}",
            hint="use " + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
        )
    if "{out}" not in template:
        raise errors.OptionError(
            "--command must contain {out}: the path where the job writes its results",
            hint="e.g. --command 'python train.py --mixture-file {mixture_file} --out {out}'",
        )


def planned_scale(frame) -> dict[str, dict[str, str]]:
    """Each run's planned ``n_params`` and ``steps`` as template values (whole numbers without a
    decimal point); a run without a planned value gets none, and a template naming it fails."""
    out: dict[str, dict[str, str]] = {}
    for _, row in frame.iterrows():
        values = {}
        for name in ("n_params", "steps"):
            v = row.get(name)
            if v is not None and v == v:  # not NaN
                v = float(v)
                values[name] = str(int(v)) if v.is_integer() else repr(v)
        out[str(row["run"])] = values
    return out


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each known placeholder replaced by its shell-quoted value; a known
    placeholder without a value (``{n_params}``, ``{steps}`` of a run without a planned size)
    is an OptionError."""
    missing = sorted(
        {m for m in _PLACEHOLDER_RE.findall(template) if m in PLACEHOLDERS} - set(values)
    )
    if missing:
        raise errors.OptionError(
            f"--command uses {{{missing[0]}}} but run {values.get('run', '?')} has no planned "
            f"{missing[0]}",
            hint="propose runs with planned sizes (a pool or menu with n_params and steps)",
        )
    return _PLACEHOLDER_RE.sub(
        lambda m: shlex.quote(str(values[m.group(1)])) if m.group(1) in values else m.group(0),
        template,
    )


__all__ = ["PLACEHOLDERS", "check_template", "fill_template", "planned_scale"]
