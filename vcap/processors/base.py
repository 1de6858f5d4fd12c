"""Processor base: built from a config section whose keys are the constructor's arguments."""
from __future__ import annotations

import inspect

from omegaconf import DictConfig, OmegaConf

from vcap.common.registry import registry
from vcap.common.validation import ConfigError, check_arguments, did_you_mean, signature_keys


class BaseProcessor:
    @classmethod
    def constructors(cls) -> list:
        """The constructors whose arguments a section may give: this class's, then its parent's for as long as each
        passes ``**kwargs`` on (a subclass declares only what it adds; each default is written once)."""
        out = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            out.append(init)
            if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
                break
        return out

    @classmethod
    def config_keys(cls) -> list[str]:
        return list(dict.fromkeys(k for init in cls.constructors() for k in signature_keys(init)))

    @classmethod
    def from_config(cls, cfg: DictConfig | dict | None):
        kwargs = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
        kwargs.pop("name", None)
        return cls(**kwargs)


def check_processor_section(section, prefix: str) -> list[str]:
    """Problems in a processor section ``{name: ..., <kwargs>}`` (checked before any work starts)."""
    if section is None:
        return []
    if "name" not in section:
        return [f"{prefix}.name: required key is missing (e.g. video_eval, caption)"]
    try:
        cls = registry.get_processor_class(section.name)
    except KeyError as e:
        return [f"{prefix}.name: {e.args[0]}"]
    valid = cls.config_keys()
    problems = [f"{prefix}.{key}: unknown key for processor {section.name!r}{did_you_mean(key, valid)}"
                for key in section if key != "name" and key not in valid]
    values = OmegaConf.to_container(section, resolve=True) if not isinstance(section, dict) else section
    checked = {"name"}
    for init in cls.constructors():  # each key against the first constructor that declares it
        problems += check_arguments(init, values, prefix, skip=tuple(checked))
        checked |= set(signature_keys(init))
    if not problems:  # a processor checks its own values when built (cheap: no files are read)
        try:
            cls.from_config(values)
        except (ValueError, TypeError) as e:
            problems.append(f"{prefix}: {e}")
    return problems


def build_processor(section):
    if section is None:
        return None
    problems = check_processor_section(section, "processor")
    if problems:
        raise ConfigError(problems)
    return registry.get_processor_class(section.name).from_config(section)
