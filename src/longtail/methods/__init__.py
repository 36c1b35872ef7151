"""Stage-2 methods: one file each, one protocol, one registry.

The protocol
------------
A method is a function ``fit(context: FitContext) -> Fitted``
(:mod:`longtail.methods.base`):

- ``context.features(split)`` gives the frozen backbone's test-time
  :class:`~longtail.engine.head_training.Features` of ``train``, ``val`` or
  ``test`` (``x`` (N, d), ``y`` (N,)), computed on first use;
  ``context.joint`` is the stage-1 head, ``context.counts`` the (C,) training
  class sizes, ``context.config`` the run's config (the method reads
  ``context.section(name)``, its ``decouple.<name>`` keys);
- a method that trains a head calls ``context.train_head(head, section,
  method=...)``: the same call trains on cached features, on augmented views,
  or on images through the backbone (``decouple.features=online``,
  ``decouple.trainable``); the method never knows which;
- a hyper-parameter grid is chosen on validation, never test
  (:func:`~longtail.methods.base.choose_on_validation`);
- it returns a :class:`~longtail.methods.base.Fitted`: the head (an
  ``nn.Module`` registered with :func:`~longtail.models.heads.register_head`,
  with ``as_linear()`` for export and figures), the parameters it chose, and
  what results.json records.

The registry
------------
:data:`~longtail.registry.METHODS` maps each name to its :class:`~longtail.methods.base.MethodSpec`:
table label, figure colour, order, config section, whether it needs a linear
joint classifier, whether ``all`` and ``auto`` include it. Every list of method
names in longtail is read from it. A method file registers itself with
:func:`register_method`; the files of this package are imported on first use of
the package, so adding a method is adding a file (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator

from ..config import register_component_sections, unregister_component_sections
from ..errors import ConfigError
from ..registry import METHODS
from .base import FitContext, Fitted, HeadTraining, MethodSpec, choose_on_validation, lr_variants, train_on_features

# The stage-1 classifier: not a stage-2 method, but a row of every table and a line of every figure.
JOINT = MethodSpec(name="joint", label="Joint", color="#444444", fit=lambda context: None, order=0, in_all=False)  # type: ignore[arg-type, return-value]


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (and its config section, if it brings one); returns it."""
    if spec.name in ("joint", "all"):
        raise ValueError(f"stage-2 method {spec.name!r} is reserved")
    METHODS.register(spec.name, spec)
    register_component_sections(("decouple",), spec.section or spec.name, spec.config, spec.renamed)
    return spec


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method` (tests, plugins)."""
    spec = METHODS.unregister(name)
    if spec is not None and spec.config is not None:
        unregister_component_sections(("decouple",), spec.section or spec.name)


def method_names() -> list[str]:
    """Every registered method, in table order."""
    return [spec.name for spec in sorted(METHODS.values(), key=lambda s: (s.order, s.name))]


def spec_of(name: str) -> MethodSpec:
    """The entry of a registered method (or of ``joint``)."""
    if name == "joint":
        return JOINT
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method {name!r}: expected one of {', '.join(method_names())}, all") from None


def label_of(name: str) -> str:
    """Table label of a method; an unknown name (a classifier file of a method not installed) as it is."""
    return spec_of(name).label if name == "joint" or name in METHODS else name


def display_order(names: Iterable[str]) -> list[str]:
    """``names`` in table order (joint first, registered methods by order, unknown ones last, alphabetically)."""
    names = set(names)
    known = [n for n in ["joint", *method_names()] if n in names]
    return known + sorted(names - set(known))


def expand_methods(requested: Iterable[str]) -> list[str]:
    """``--method`` values to the methods to fit, in order: ``all`` is every method with ``in_all``;
    a method that chooses among the others (``auto``) brings them all first. Names are checked."""
    everything = [n for n in method_names() if METHODS[n].in_all]
    expanded: list[str] = []
    for name in requested:
        if name == "all":
            names = everything
        elif spec_of(name).chooses_among_others:
            names = [*everything, name]
        else:
            names = [name]
        expanded += [n for n in names if n not in expanded]
    return expanded


def iter_specs(names: Iterable[str]) -> Iterator[MethodSpec]:
    """The entries of ``names``, in the given order."""
    return (spec_of(name) for name in names)


def _import_method_files() -> None:
    """Import every module of this package: each registers its method."""
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if module != "base":
            importlib.import_module(f"{__name__}.{module}")


_import_method_files()

__all__ = [
    "JOINT",
    "METHODS",
    "FitContext",
    "Fitted",
    "HeadTraining",
    "MethodSpec",
    "choose_on_validation",
    "display_order",
    "expand_methods",
    "iter_specs",
    "label_of",
    "lr_variants",
    "method_names",
    "register_method",
    "spec_of",
    "train_on_features",
    "unregister_method",
]
