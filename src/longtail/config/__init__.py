"""Typed configuration: defaults in dataclasses, a YAML file over them, ``key=value`` overrides last.

Every key is checked: an unknown key names its closest match, a wrong type or
an impossible value names the key and what was expected. The resolved config is
written next to every checkpoint (``config.yaml``) and reloads to the same object.

The package, by job: :mod:`~longtail.config.options` (what a key accepts, declared
once), :mod:`~longtail.config.schema` (the sections and their keys),
:mod:`~longtail.config.sections` (the sections components register),
:mod:`~longtail.config.fields` (types and conversion), :mod:`~longtail.config.build`
(file and overrides to a config), :mod:`~longtail.config.validate`,
:mod:`~longtail.config.reference` (the documentation), :mod:`~longtail.config.serialize`,
:mod:`~longtail.config.yaml_file` (the hardened YAML reader) and :mod:`~longtail.config.yaml11`
(YAML 1.1 numbers such as ``1:30`` kept as typed, not guessed).
"""

from ..errors import SHOWN_CHARS, shown
from .build import EXTERNAL_BACKBONES, config_from_dict, load_config, parse_override
from .options import AutoOr, Each, Interval, OneOf, Parameters, Satisfies, check_value, option, require
from .reference import KeyDoc, config_keys, config_markdown_table, config_reference, key_docs
from .schema import (
    Config,
    DataConfig,
    DecoupleConfig,
    EvalConfig,
    HeadTrainingConfig,
    ModelConfig,
    TauConfig,
    TrainConfig,
)
from .sections import (
    register_component_sections,
    register_section,
    unregister_component_sections,
    unregister_section,
)
from .serialize import config_to_dict, save_config
from .validate import validate_config
from .yaml_file import MAX_CONFIG_BYTES

__all__ = [
    "EXTERNAL_BACKBONES",
    "MAX_CONFIG_BYTES",
    "SHOWN_CHARS",
    "AutoOr",
    "Config",
    "DataConfig",
    "DecoupleConfig",
    "Each",
    "EvalConfig",
    "HeadTrainingConfig",
    "Interval",
    "KeyDoc",
    "ModelConfig",
    "OneOf",
    "Parameters",
    "Satisfies",
    "TauConfig",
    "TrainConfig",
    "check_value",
    "config_from_dict",
    "config_keys",
    "config_markdown_table",
    "config_reference",
    "config_to_dict",
    "key_docs",
    "load_config",
    "option",
    "parse_override",
    "register_component_sections",
    "register_section",
    "require",
    "save_config",
    "shown",
    "unregister_component_sections",
    "unregister_section",
    "validate_config",
]
