"""The posterior's file: its layout, the checks a tree in that layout passes, and one NetCDF
file written and read (``Posterior.save`` and ``Posterior.load``).

A posterior is an ``xarray.DataTree`` with the groups ``posterior`` (the law's parameters and
the noise model's; variables carry ``units`` and ``description`` attrs), ``sample_stats``,
``sampler_variables`` (the sampler's own, :mod:`bayesmix.posterior.groups`), ``observed_data``,
``posterior_predictive`` (both ``loss`` (run, eval_domain), so ``arviz_plots.plot_ppc_dist``
pairs them) and ``constant_data`` (``proportions`` (run, train_domain) [, n_params, tokens]),
``log_likelihood`` (:mod:`bayesmix.posterior.data_groups`) and ``fit_data`` (the run table it was
fitted to); the root attrs hold the model specification, the diagnostics report, the fit
settings and package versions as JSON strings. Files written before the data groups existed
load as they are. One NetCDF file holds all of it, so ``az.summary``, arviz-plots and
``arviz_stats.loo``/``compare`` read a saved posterior directly, and another process can
reload and extend it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.io import atomic_path
from bayesmix.laws import get_law
from bayesmix.model.spec import ModelSpec
from bayesmix.posterior.data_groups import data_groups, describe_variables
from bayesmix.posterior.diagnostics import Diagnostics
from bayesmix.posterior.groups import SAMPLER_GROUP, split_groups

FORMAT = "bayesmix-posterior/1"
_VERSIONED = (
    "bayesmix",
    "pymc",
    "pytensor",
    "nutpie",
    "arviz-base",
    "arviz-stats",
    "numpy",
    "xarray",
)


def package_versions() -> dict[str, str]:
    """``{package: version}`` of the packages a posterior's numbers depend on (root attribute
    ``bayesmix_versions``)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


#: Root attributes holding JSON objects; the first two must be present.
_JSON_ATTRS = (
    "bayesmix_model_spec",
    "bayesmix_diagnostics",
    "bayesmix_settings",
    "bayesmix_versions",
)
_REQUIRED_ATTRS = ("bayesmix_model_spec", "bayesmix_diagnostics")


def _damaged(problem: str) -> errors.PosteriorFileError:
    return errors.PosteriorFileError(
        f"the file is damaged: {problem}", hint="refit it with 'bayesmix fit', or restore a copy"
    )


def _check_format(value) -> None:
    """The format attribute: this format, else a named reason (missing, newer, foreign)."""
    if value is None:
        raise errors.PosteriorFileError(
            "not a bayesmix posterior (missing format attribute)",
            hint="fit one with 'bayesmix fit'",
        )
    if not isinstance(value, str):
        raise _damaged(f"format attribute {value!r} is not text")
    if value == FORMAT:
        return
    family, _, number = value.partition("/")
    mine = int(FORMAT.rpartition("/")[2])
    if family == FORMAT.partition("/")[0] and number.isdigit() and int(number) > mine:
        raise errors.PosteriorFileError(
            f"written by a newer bayesmix format {value} (this bayesmix reads {FORMAT})",
            hint="upgrade bayesmix to read it",
        )
    raise errors.PosteriorFileError(
        f"not a bayesmix posterior (format attribute {value!r})", hint="fit one with 'bayesmix fit'"
    )


def _json_attr(attrs, name: str, required: bool) -> None:
    """A root attribute that must hold a JSON object (as text)."""
    if name not in attrs:
        if required:
            raise _damaged(f"attribute {name!r} is missing")
        return
    value = attrs[name]
    if not isinstance(value, str):
        raise _damaged(f"attribute {name!r} is a {type(value).__name__}, not JSON text")
    try:
        obj = json.loads(value)
    except ValueError:
        raise _damaged(f"attribute {name!r} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _damaged(f"attribute {name!r} is not a JSON object")


def _check_groups(tree: xr.DataTree, law) -> None:
    """The groups and variables every reader needs: the law's parameters and sigma (with the
    domain coordinates) in ``posterior``, and the run table in ``fit_data``."""
    if "posterior" not in tree.children:
        raise _damaged("group 'posterior' is missing")
    post = tree["posterior"]
    for coord in ("chain", "draw", "train_domain", "eval_domain"):
        if coord not in post.coords and coord not in post.dims:
            raise _damaged(f"coordinate {coord!r} of group 'posterior' is missing")
    for name in (*law.param_names, "sigma"):
        if name not in post.data_vars:
            raise _damaged(f"variable {name!r} of group 'posterior' is missing")
    if "fit_data" not in tree.children:
        raise _damaged("group 'fit_data' is missing")
    fit_data = tree["fit_data"]
    for name in ("columns", "train_domains", "eval_domains"):
        try:
            value = json.loads(fit_data.attrs[name])
        except (KeyError, TypeError, ValueError):
            raise _damaged(
                f"attribute {name!r} of group 'fit_data' is missing or not JSON"
            ) from None
        if not isinstance(value, list):
            raise _damaged(f"attribute {name!r} of group 'fit_data' is not a list")
    missing = [c for c in json.loads(fit_data.attrs["columns"]) if c not in fit_data.data_vars]
    if missing:
        raise _damaged(f"variable {missing[0]!r} of group 'fit_data' is missing")


def check_tree(tree: xr.DataTree) -> tuple[ModelSpec, Diagnostics]:
    """The model specification and diagnostics report of a tree in the stored layout, after
    checking it: format, JSON attributes, and the groups and variables every reader needs.
    Anything else is a PosteriorFileError saying what is wrong."""
    attrs = tree.attrs
    _check_format(attrs.get("bayesmix_format"))
    for name in _JSON_ATTRS:
        _json_attr(attrs, name, required=name in _REQUIRED_ATTRS)
    try:
        spec = ModelSpec.from_json(attrs["bayesmix_model_spec"])
    except errors.SpecError as err:
        if err.problem.startswith("unknown law"):
            hint = (
                "a law defined outside bayesmix must be registered first "
                "(import its module, or bayesmix.laws.register)"
            )
        else:
            hint = "it was written by another version of bayesmix: refit it"
        raise errors.PosteriorFileError(
            f"its model specification does not fit this bayesmix ({err.problem})", hint=hint
        ) from None
    try:
        diagnostics = Diagnostics.from_json(attrs["bayesmix_diagnostics"])
    except (TypeError, ValueError) as err:
        raise errors.PosteriorFileError(
            f"the file is damaged: attribute 'bayesmix_diagnostics' is not a diagnostics "
            f"report ({type(err).__name__})",
            hint="refit, or restore the file",
        ) from None
    _check_groups(tree, get_law(spec.law))
    return spec, diagnostics


def assemble(
    tree: xr.DataTree, spec: ModelSpec, runs: RunTable, diagnostics: Diagnostics, settings: dict
) -> xr.DataTree:
    """The stored layout from a sampler's DataTree and the fit's inputs (without the
    ``log_likelihood`` group: ``Posterior`` adds it, from the stored ``fit_data``, so a fresh
    posterior and a reloaded one compute it from exactly the same numbers)."""
    law = get_law(spec.law)
    tree = split_groups(tree, law)  # the law's parameters; the sampler's apart
    keep = {
        name: tree[name].to_dataset()
        for name in ("posterior", "sample_stats", SAMPLER_GROUP)
        if name in tree.children
    }
    stats = keep["sample_stats"]
    keep["sample_stats"] = stats[[v for v in stats.data_vars if stats[v].dtype != object]]
    keep["posterior"] = describe_variables(keep["posterior"], law)
    # observed_data, constant_data, posterior_predictive: ArviZ's layout, one row per run
    keep.update(
        data_groups(keep["posterior"], law, spec.likelihood, runs, random_seed=settings.get("seed"))
    )
    keep["fit_data"] = encode_fit_data(runs)
    out = xr.DataTree.from_dict(keep)
    out.attrs.update(
        {
            "bayesmix_format": FORMAT,
            "bayesmix_model_spec": spec.to_json(),
            "bayesmix_diagnostics": diagnostics.to_json(),
            "bayesmix_settings": json.dumps(settings, sort_keys=True),
            "bayesmix_versions": json.dumps(package_versions(), sort_keys=True),
        }
    )
    return out


def encode_fit_data(runs: RunTable) -> xr.Dataset:
    """The run table as a Dataset with a ``record`` dim (NetCDF-safe; names keep their order)."""
    tidy = runs.to_tidy()
    ds = xr.Dataset(
        {
            c: (("record",), tidy[c].to_numpy(dtype=str if c == "run" else float))
            for c in tidy.columns
        }
    )
    ds.attrs["columns"] = json.dumps(list(tidy.columns))
    ds.attrs["train_domains"] = json.dumps(list(runs.train_domains))
    ds.attrs["eval_domains"] = json.dumps(list(runs.eval_domains))
    ds.attrs["source"] = runs.source or ""
    return ds


def decode_fit_data(ds: xr.Dataset) -> RunTable:
    """The run table stored by :func:`encode_fit_data` (exactly as validated)."""
    cols = json.loads(ds.attrs["columns"])
    tidy = pd.DataFrame({c: ds[c].values for c in cols})
    tidy["run"] = tidy["run"].astype(str)
    return RunTable(
        tidy,
        json.loads(ds.attrs["train_domains"]),
        json.loads(ds.attrs["eval_domains"]),
        source=ds.attrs.get("source") or None,
    )


def save(tree: xr.DataTree, path: str | Path) -> Path:
    """Write ``tree`` as one NetCDF file with :mod:`bayesmix.io`'s atomic writer (mode 0666 &
    ~umask); a failed write is a WriteError and leaves any old file intact. Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            tree.to_netcdf(tmp, engine="h5netcdf", encoding=checksummed(tree))
        except OSError as err:
            raise errors.WriteError(
                f"cannot write the posterior ({err.strerror or err})",
                source=str(path),
                hint="check the folder's permissions and free space; nothing was replaced",
            ) from None
    return path


def checksummed(tree: xr.DataTree) -> dict[str, dict]:
    """The NetCDF encoding that stores every numeric array of ``tree`` with HDF5's fletcher32
    checksum (one chunk per array), so a file whose draws were damaged on disk is refused when
    read instead of used silently; scalars and text are stored as they are."""
    encoding = {}
    for node in tree.subtree:
        arrays = {
            name: {"fletcher32": True, "chunksizes": var.shape}
            for name, var in node.dataset.data_vars.items()
            if var.ndim and var.dtype.kind in "fiub" and var.size
        }
        if arrays:
            encoding[node.path] = arrays
    return encoding


class _Loaded(Protocol):
    source: str | None


def load[P: _Loaded](path: str | Path, make: Callable[[xr.DataTree], P]) -> P:
    """``make(tree)`` (the Posterior class) of the tree in the file written by :func:`save`, with
    ``source`` set to ``path``. A missing, foreign, damaged (unreadable, attributes of the
    wrong type, variables deleted) or newer-format file is a PosteriorFileError naming the
    file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise errors.PosteriorFileError(
            "file not found", source=str(path), hint="fit one with 'bayesmix fit RUNS -o FILE'"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise errors.PosteriorFileError(
            f"cannot open the file ({err.strerror or err})",
            source=str(path),
            hint="check its permissions",
        ) from None
    if head != b"\x89HDF\r\n\x1a\n":
        raise errors.PosteriorFileError(
            "cannot read NetCDF: "
            + (
                "the file is empty"
                if not head
                else "no NetCDF-4/HDF5 signature (damaged, or not a posterior)"
            ),
            source=str(path),
            hint="give a posterior saved by 'bayesmix fit'",
        )
    try:
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    except Exception as err:  # h5py/netCDF raise many types for a damaged file
        checksum = "filter returned failure" in str(err)  # fletcher32 found changed bytes
        raise errors.PosteriorFileError(
            "the file is damaged: "
            + ("its checksums do not match" if checksum else "cannot read NetCDF")
            + f" ({type(err).__name__})",
            source=str(path),
            hint="refit it with 'bayesmix fit', or restore a copy",
        ) from None
    try:
        post = make(tree)
        post.source = str(path)
        return post
    except errors.PosteriorFileError as err:
        raise errors.PosteriorFileError(err.problem, source=str(path), hint=err.hint) from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise errors.PosteriorFileError(
            f"the file is damaged or incomplete ({type(err).__name__}: {err})",
            source=str(path),
            hint="refit it with 'bayesmix fit', or restore a copy",
        ) from None


__all__ = [
    "FORMAT",
    "assemble",
    "check_tree",
    "decode_fit_data",
    "encode_fit_data",
    "load",
    "package_versions",
    "save",
]
