"""The run identity: the configuration fields that name a result, where a composed config holds
each, and the paper's choice a run made before a field was recorded. Training writes
``with_defaults(read_identity(cfg))`` into ``results.json``; the reader takes the same fields back
from ``results.json``, ``.hydra/config.yaml`` or a W&B config, and pools runs equal on all but the seed
(and the val/test subsets, recorded only; where a run did not record them they read as None: all of them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf


@dataclass(frozen=True)
class Field:
    """Where a composed config holds one identity field (the first of ``paths`` present), and the
    value a run that did not record it made (None: no default, the value is part of the record)."""

    paths: tuple[tuple[str, ...], ...]
    default: Any = None


#: the identity, in table order (the order results are sorted and printed by)
FIELDS: dict[str, Field] = {
    # a benchmark without a name is named by its class
    "benchmark": Field((("data", "benchmark", "name"), ("data", "benchmark", "_target_"))),
    "model": Field((("model", "short_name"),)),
    "method": Field((("method", "name"),)),
    "label_source": Field((("data", "label_source"),)),
    "fraction": Field((("data", "fraction"),)),
    "rationale_weight": Field((("method", "rationale_weight"),)),
    "alpha": Field((("method", "alpha"),)),
    "max_steps": Field((("trainer", "max_steps"),)),
    "global_batch_size": Field((("data", "batch_size"),)),
    "lr": Field((("optimizer", "lr"),)),
    # the follow-up literature's choices; the defaults are the paper's
    "shared_input": Field((("method", "shared_input"),), False),
    "rationales": Field((("data", "rationales"),), "first"),
    "rationale_filter": Field((("data", "rationale_filter"),), "none"),
    "rationale_position": Field((("method", "rationale_position"),), "before"),
    "seed": Field((("seed",),)),
    # which examples validation and testing read: a fixed subset of that many, or None (all of them)
    "val_subset": Field((("data", "val_subset"),)),
    "test_subset": Field((("data", "test_subset"),)),
}
#: recorded with a result, not pooled by (the tables have no column for them)
SUBSET_KEYS = ("val_subset", "test_subset")
#: what results are pooled by: everything but the seed and the subsets
GROUP_KEYS = tuple(name for name in FIELDS if name not in ("seed", *SUBSET_KEYS))
#: the follow-up choices a run can make beside the paper's method
VARIANT_KEYS = ("rationales", "rationale_filter", "rationale_position")
#: the paper's choices, for runs recorded before a field was
DEFAULTS = {name: f.default for name, f in FIELDS.items() if f.default is not None}
#: what a ``results.json`` must record to be a usable result
REQUIRED = ("benchmark", "model", "method", "fraction", "seed")

_ABSENT = object()


def _lookup(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    flat = "/".join(path)  # W&B may store a nested config flattened
    if flat in config:
        return config[flat]
    node: Any = config
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _interpolated(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` with its interpolation resolved within ``config`` (an unresolved
    ``.hydra/config.yaml``: ``method.shared_input: ${model.decoder_only}``), None where it cannot be
    (``${hydra:...}``, a key the config lacks)."""
    try:
        return OmegaConf.select(OmegaConf.create(dict(config)), ".".join(path), throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve reads as absent
        return None


def read_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`FIELDS` from a composed config (a DictConfig, or a plain dict nested or flattened as
    ``data/fraction``), interpolations resolved within it; None where absent or unresolvable."""
    identity = {}
    for name, field in FIELDS.items():
        path, value = next(((p, v) for p in field.paths if (v := _lookup(config, p)) is not _ABSENT), (None, None))
        if isinstance(value, str) and "${" in value:
            value = _interpolated(config, path)
            value = None if isinstance(value, str) and "${" in value else value
        identity[name] = value
    return identity


def with_defaults(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` with the paper's choice where a field with a default is None, shared_input a bool."""
    filled = {name: DEFAULTS[name] if value is None and name in DEFAULTS else value for name, value in identity.items()}
    if "shared_input" in filled:
        filled["shared_input"] = bool(filled["shared_input"])
    return filled


def group_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """The values of :data:`GROUP_KEYS` a run is pooled by: :func:`with_defaults`, and the rationale
    position only for single_task (the one method that has the choice)."""
    key = with_defaults({name: config.get(name) for name in GROUP_KEYS})
    if config.get("method") != "single_task":
        key["rationale_position"] = DEFAULTS["rationale_position"]
    return key
