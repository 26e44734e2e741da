"""Which of a fit's draws the ``posterior`` group holds, and where the rest go.

``posterior`` holds what the law says: its parameters and documented derived quantities
(:attr:`bayesmix.laws.Law.shown`) and the noise model's named variables
(:data:`bayesmix.model.model.NOISE_VARIABLES`), every one defined in ``docs/parameters.md``, so
``az.summary(tree)`` lists only those. Everything else NUTS moved or computed on the way
(hyperparameters, non-centred and whitened coordinates, rows before centring) goes to the group
:data:`SAMPLER_GROUP`, saved and loaded with the file; each of its variables carries the attr
:data:`OWNER_ATTR` naming the parameters it belongs to, so the diagnostics gate (which checks
both groups) says what a poorly mixing sampler variable means. A file without the group (written
before it existed) loads as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import xarray as xr

#: The group of the sampler's own variables.
SAMPLER_GROUP = "sampler_variables"
#: Attr of a sampler variable: the parameters it belongs to, comma-separated.
OWNER_ATTR = "sampler_variable_of"
#: Coordinates the ``posterior`` group keeps even when no kept variable has their dim.
DOMAIN_COORDS = ("eval_domain", "train_domain")


def kept_names(law) -> tuple[str, ...]:
    """Names the ``posterior`` group holds (when the fit has them): the law's shown parameters,
    then the noise variables."""
    from bayesmix.model.model import NOISE_VARIABLES  # PyMC: not needed by the gate's readers
    from bayesmix.model.splits import SPLIT_VARIABLE

    return (*law.shown_names, *NOISE_VARIABLES, *SPLIT_VARIABLE)


def split_groups(
    tree: xr.DataTree, law, owners: Mapping[str, tuple[str, ...]] | None = None
) -> xr.DataTree:
    """``tree`` with every variable of its ``posterior`` group that the law does not show
    moved to :data:`SAMPLER_GROUP` (added to the variables already there), each labelled with
    its ``owners`` (:func:`bayesmix.model.model.sampler_owners`) when known. A tree already
    split is returned unchanged."""
    post = tree["posterior"].to_dataset()
    keep = set(kept_names(law))
    moved = [str(v) for v in post.data_vars if v not in keep]
    if not moved:
        return tree
    coords = {c: post.coords[c] for c in DOMAIN_COORDS if c in post.coords}
    kept = post[[v for v in post.data_vars if v in keep]].assign_coords(coords)
    rest = post[moved]
    for name in moved:
        found = (owners or {}).get(name)
        if found:
            rest[name].attrs = {**rest[name].attrs, OWNER_ATTR: ", ".join(found)}
    if SAMPLER_GROUP in tree.children:
        rest = xr.merge([tree[SAMPLER_GROUP].to_dataset(), rest], combine_attrs="override")
    out = tree.copy()
    out["posterior"] = xr.DataTree(kept)
    out[SAMPLER_GROUP] = xr.DataTree(rest)
    return out


def owner_note(attrs: Mapping) -> str:
    """`` (sampler variable of t)`` for a variable with :data:`OWNER_ATTR`, else ``""``."""
    owner = attrs.get(OWNER_ATTR)
    return f" (sampler variable of {owner})" if owner else ""


def all_draws(tree: xr.DataTree) -> xr.Dataset:
    """Every variable of the model: the ``posterior`` group and, when the tree has it,
    :data:`SAMPLER_GROUP`. What the diagnostics gate checks, and what PyMC's functions of a
    model's draws need (e.g. ``pm.compute_log_likelihood`` reads every free variable)."""
    post = tree["posterior"].to_dataset()
    if SAMPLER_GROUP in tree.children:
        post = xr.merge([post, tree[SAMPLER_GROUP].to_dataset()], combine_attrs="override")
    return post
