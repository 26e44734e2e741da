"""Model specifications: declarative TOML files in ``models/``, loaded by name or path.

A specification names the law (a registered :class:`bayesmix.laws.Law`), the likelihood, the
hierarchy options and the priors. Priors default to the law's own (:attr:`Law.priors`) and the
noise model's (:data:`NOISE_PRIORS`); a specification lists only those it changes. ``extends``
inherits from another specification (tables merge, keys override). The resolved specification is
stored as JSON with every saved posterior, so a posterior always knows the model it came from.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bayesmix.errors import SpecError
from bayesmix.laws import DEFAULT_LAW
from bayesmix.model.priors import Prior

_TOP_KEYS = {"name", "description", "law", "extends", "likelihood", "hierarchy", "priors"}
_LIKELIHOOD_KEYS = {"family", "nu"}
#: Hierarchy keys of every law; a law's extra dims (:attr:`bayesmix.laws.Law.extra_dims`, e.g.
#: ``latent``) add one key each, the size of that dim.
_HIERARCHY_KEYS = {"curvature", "diagonal", "parameterization", "run_effect"}
#: Largest size of a law's extra dim (``hierarchy.<dim>``, e.g. the number of latent domains).
MAX_DIM_SIZE = 20
FAMILIES = ("normal", "student_t")
#: Priors of the noise model, shared by every law: sigma_i = exp(log_sigma_mu + log_sigma_sigma
#: z_i), log_sigma_mu centred on log(0.25 x the typical spread of the losses) (data-scaled).
NOISE_PRIORS: dict[str, dict] = {
    "log_sigma_mu": {"dist": "Normal", "mu": "data", "sigma": 1.5},
    "log_sigma_sigma": {"dist": "HalfNormal", "sigma": 0.5},
}


#: The run effect of laws fitted to every checkpoint (see :func:`bayesmix.model.model._run_effect`):
#: log run_sigma_i ~ Normal(log_run_sigma_mu, log_run_sigma_sigma), centred on the data's noise.
RUN_EFFECT_PRIORS: dict[str, dict] = {
    "log_run_sigma_mu": {"dist": "Normal", "mu": "data", "sigma": 1.5},
    "log_run_sigma_sigma": {"dist": "HalfNormal", "sigma": 0.5},
}


def default_priors(law_name: str) -> dict[str, dict]:
    """Every prior a specification with this law has unless it overrides them: the law's
    own defaults, then the noise model's."""
    from bayesmix.laws import get_law

    law = get_law(law_name)
    extra = RUN_EFFECT_PRIORS if "tokens" in law.inputs else {}
    return {**{k: dict(v) for k, v in law.priors.items()}, **NOISE_PRIORS, **extra}


def models_dir() -> Path:
    """The shipped specifications: inside the wheel, or ``models/`` of a source checkout."""
    package = Path(__file__).resolve().parents[1]  # bayesmix/ (this file: bayesmix/model/spec.py)
    for candidate in (package / "models", package.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise SpecError("cannot find the shipped models/ folder", hint="reinstall bayesmix")


def available_models() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model specification (plain data; see ``models/default.toml``)."""

    name: str
    description: str
    law: str
    likelihood: dict
    hierarchy: dict
    priors: dict[str, Prior]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "law": self.law,
            "likelihood": dict(self.likelihood),
            "hierarchy": dict(self.hierarchy),
            "priors": {k: p.to_dict() for k, p in self.priors.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> ModelSpec:
        return _resolve(json.loads(s), source="stored specification")

    def with_priors(self, **priors: Prior | Mapping) -> ModelSpec:
        """A copy with some priors replaced (user priors override the defaults)."""
        d = self.to_dict()
        for k, p in priors.items():
            d["priors"][k] = p.to_dict() if isinstance(p, Prior) else dict(p)
        return _resolve(d, source="with_priors")

    def with_hierarchy(self, **options) -> ModelSpec:
        """A copy with some hierarchy options replaced (e.g. ``families={"mmlu_*": "mmlu"}``
        for the ``tasks`` law), checked as a file's would be."""
        d = self.to_dict()
        d["hierarchy"].update(options)
        return _resolve(d, source="with_hierarchy")

    def to_toml(self) -> str:
        """The resolved specification as a complete TOML file (every prior written out)."""

        def value(v):
            if isinstance(v, Mapping):  # an inline table, e.g. hierarchy.families
                inner = ", ".join(f"{json.dumps(a)} = {value(b)}" for a, b in v.items())
                return "{ " + inner + " }"
            return json.dumps(v) if isinstance(v, str) else repr(v)

        lines = [
            f"name = {value(self.name)}",
            f"description = {value(self.description)}",
            f"law = {value(self.law)}",
            "",
            "[likelihood]",
        ]
        lines += [f"{k} = {value(v)}" for k, v in self.likelihood.items()]
        lines += ["", "[hierarchy]"] + [f"{k} = {value(v)}" for k, v in self.hierarchy.items()]
        lines += ["", "[priors]"]
        for k, p in self.priors.items():
            inner = ", ".join(f"{a} = {value(b)}" for a, b in p.to_dict().items())
            lines.append(f"{k} = {{ {inner} }}")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        lines = [
            f"model {self.name!r}: {self.description}",
            f"  law: {self.law}",
            "  likelihood: " + ", ".join(f"{k}={v}" for k, v in self.likelihood.items()),
            "  hierarchy: " + ", ".join(f"{k}={v}" for k, v in self.hierarchy.items()),
            "  priors:",
        ]
        lines += [f"    {k} ~ {p}" for k, p in self.priors.items()]
        return "\n".join(lines)


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(
            "model file not found",
            source=str(path),
            hint=f"shipped models: {', '.join(available_models())}",
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SpecError(f"cannot read model specification: {err}", source=str(path)) from None


def _merge(base: dict, over: dict, depth: int = 0) -> dict:
    """``over`` on top of ``base``; tables merge, except that a prior (a table inside
    ``priors``) is replaced whole: its parameters depend on its distribution."""
    out = dict(base)
    for k, v in over.items():
        prior_table = depth == 1
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not prior_table:
            out[k] = _merge(out[k], v, depth + 1 if (depth or k == "priors") else 0)
        else:
            out[k] = v
    return out


def _raw(name_or_path: str | Path, seen: tuple = ()) -> tuple[dict, str]:
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or Path(text).is_file():
        path = Path(text)
    else:
        path = models_dir() / f"{text}.toml"
        if not path.is_file():
            raise SpecError(
                f"unknown model {text!r}",
                hint=f"shipped models: {', '.join(available_models())}, or give a .toml file",
            )
    raw = _read_toml(path)
    parent = raw.pop("extends", None)
    if parent is not None:
        if parent in seen:
            raise SpecError(f"'extends' loops through {parent!r}", source=str(path))
        if parent.endswith(".toml") and not Path(parent).is_absolute():
            parent_ref: str | Path = path.parent / parent  # relative to the extending file
        else:
            parent_ref = parent
        base, _ = _raw(parent_ref, seen + (parent,))
        raw = _merge(base, raw)
    return raw, str(path)


def load_spec(name_or_path: str | Path | ModelSpec = "default") -> ModelSpec:
    """Load a shipped specification by name (``"default"``) or a TOML file by path."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    raw, source = _raw(name_or_path)
    return _resolve(raw, source)


def _check_hierarchy_keys(hier: dict, law: str, source: str) -> None:
    """Every hierarchy key is a shared one or an extra dim of the law (whose size it gives, a
    whole number from 1 to MAX_DIM_SIZE); a dim of another law is refused naming its laws."""
    from bayesmix.laws import available_laws, get_law

    own = get_law(law).extra_dims
    tables = get_law(law).hierarchy_keys
    for key in sorted(set(hier) - _HIERARCHY_KEYS):
        if key in tables:
            _check_name_table(hier[key], key, source)
            continue
        if key not in own:
            owners = sorted(n for n, other in available_laws().items() if key in other.extra_dims)
            if owners:
                raise SpecError(
                    f"hierarchy {key} applies only to laws with a {key!r} dim "
                    f"({', '.join(owners)}), not {law}",
                    source=source,
                    hint="remove it, or use one of those laws",
                )
            raise SpecError(
                f"unknown hierarchy key {key!r}",
                source=source,
                hint="allowed: " + ", ".join(sorted(_HIERARCHY_KEYS | set(own) | set(tables))),
            )
        k = hier[key]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_DIM_SIZE:
            raise SpecError(
                f"hierarchy {key} must be a whole number from 1 to {MAX_DIM_SIZE}, got {k!r}",
                source=source,
            )


def _check_name_table(table, key: str, source: str) -> None:
    """A law's name-table hierarchy key (e.g. ``families``): names or globs -> names."""
    if not isinstance(table, Mapping) or not all(
        isinstance(a, str) and isinstance(b, str) and a and b for a, b in table.items()
    ):
        raise SpecError(
            f"hierarchy {key} must be a table of names to names, got {table!r}",
            source=source,
            hint=f'e.g. [hierarchy.{key}] "mmlu_*" = "knowledge"',
        )


def _resolve(raw: dict, source: str) -> ModelSpec:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SpecError(
            f"unknown key {sorted(unknown)[0]!r}",
            source=source,
            hint=f"allowed: {', '.join(sorted(_TOP_KEYS - {'extends'}))}",
        )
    law = str(raw.get("law", DEFAULT_LAW))
    try:
        needed = default_priors(law)
    except SpecError as err:
        raise SpecError(err.problem, source=source, hint=err.hint) from None
    lik = dict(raw.get("likelihood", {}))
    if set(lik) - _LIKELIHOOD_KEYS:
        raise SpecError(
            f"unknown likelihood key {sorted(set(lik) - _LIKELIHOOD_KEYS)[0]!r}",
            source=source,
            hint="allowed: family, nu",
        )
    lik.setdefault("family", "student_t")
    if lik["family"] not in FAMILIES:
        raise SpecError(
            f"unknown likelihood family {lik['family']!r}",
            source=source,
            hint=f"use one of {', '.join(FAMILIES)}",
        )
    if lik["family"] == "student_t":
        nu = lik.setdefault("nu", 4.0)
        if not isinstance(nu, (int, float)) or nu <= 0:
            raise SpecError(f"likelihood nu must be a positive number, got {nu!r}", source=source)
    hier = dict(raw.get("hierarchy", {}))
    _check_hierarchy_keys(hier, law, source)
    hier.setdefault("diagonal", "auto")
    hier.setdefault("parameterization", "centered")
    if hier["parameterization"] not in ("centered", "noncentered"):
        raise SpecError(
            "hierarchy parameterization must be centered or noncentered, got "
            f"{hier['parameterization']!r}",
            source=source,
        )
    if hier.get("curvature", "centered") not in ("centered", "noncentered"):
        raise SpecError(
            f"hierarchy curvature must be centered or noncentered, got {hier['curvature']!r}",
            source=source,
        )
    if hier["diagonal"] not in ("auto", "on", "off"):
        raise SpecError(
            f"hierarchy diagonal must be auto, on or off, got {hier['diagonal']!r}", source=source
        )
    if hier.get("run_effect", "on") not in ("on", "off"):
        raise SpecError(
            f"hierarchy run_effect must be on or off, got {hier['run_effect']!r}", source=source
        )
    raw_priors = raw.get("priors", {})
    extra = set(raw_priors) - set(needed)
    if extra:
        raise SpecError(
            f"unknown prior {sorted(extra)[0]!r} for law {law}",
            source=source,
            hint=f"priors: {', '.join(needed)}",
        )
    priors = {}
    for k in needed:
        try:
            priors[k] = Prior.from_dict(raw_priors.get(k, needed[k]), name=k)
        except SpecError as err:
            raise SpecError(err.problem, source=source, hint=err.hint) from None
    return ModelSpec(
        name=str(raw.get("name", Path(source).stem)),
        description=str(raw.get("description", "")),
        law=law,
        likelihood=lik,
        hierarchy=hier,
        priors=priors,
    )
