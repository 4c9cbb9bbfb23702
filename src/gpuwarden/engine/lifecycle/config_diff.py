"""What a re-read config file changes, worked out so that a bad edit never disturbs a
running model.

:func:`diff_configs` compares the running :class:`Config` with a freshly parsed one and
its problems, and says which models were added, removed or changed, which global
settings differ, and which config to run from now on. The rules:

* a file that could not be read or is not valid TOML changes nothing (``unusable``);
* a model whose new entry has a problem keeps its old settings (``kept``), and a new
  model with a problem is not added;
* when some entry's problem cannot be tied to a name (``models[3]``: its name line is
  broken, or ``models`` is not an array of tables), no model is removed in this reload:
  the broken entry may well be a running model's;
* global settings come from the new file, except a group (``[pressure]``, ``[restart]``,
  ``sample_interval_s``, ``llama_server``) with a problem: it keeps its running values
  rather than fall back to its defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpuwarden.engine.lifecycle.config import (
    API_FIELDS,
    PRESSURE_FIELDS,
    RESTART_FIELDS,
    SAFETY_FIELDS,
    TOP_FIELDS,
    Config,
    ConfigProblem,
    ModelConfig,
)

SETTINGS: tuple[str, ...] = ("pressure", "restart", "safety", "sample_interval_s",
                             "llama_server", "api")
_SETTING_NAMES = {"sample_interval_s": "sample interval", "llama_server": "llama-server path"}
# How tomlcheck.read_text and TomlDoc.load word a file that yields nothing at all.
_UNNAMED = re.compile(r"models\[\d+\]")  # how config.py labels an entry with no name
_SETTING_OF: dict[str, str] = {
    **dict.fromkeys((*PRESSURE_FIELDS, "pressure"), "pressure"),
    **dict.fromkeys((*RESTART_FIELDS, "restart"), "restart"),
    **dict.fromkeys((*SAFETY_FIELDS, "safety"), "safety"),
    **dict.fromkeys((*API_FIELDS, "api"), "api"),
    **{key: key for key in TOP_FIELDS},
}


@dataclass(frozen=True)
class ConfigDiff:
    """What changed. ``config`` is the config to run from now on; ``unusable`` is why
    the file was not used at all (then ``config`` is the old one and nothing changed)."""

    added: tuple[ModelConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[ModelConfig, ...]  # the new settings of models whose settings differ
    kept: tuple[str, ...]  # models (and settings groups) whose new entry is broken: as before
    settings_changed: tuple[str, ...]  # names from SETTINGS
    config: Config
    unusable: str | None = None

    @property
    def empty(self) -> bool:
        """True when there is nothing to apply."""
        return not (self.added or self.removed or self.changed or self.settings_changed)


def diff_configs(old: Config, new: Config, problems: Sequence[ConfigProblem]) -> ConfigDiff:
    """The change from ``old`` (running) to ``new`` (just parsed, with ``problems``)."""
    unusable = _unusable(new, problems)
    if unusable is not None:
        return ConfigDiff((), (), (), (), (), old, unusable)
    broken = {p.entry for p in problems if p.entry is not None and not _unnamed(p)}
    unnamed = any(_unnamed(p) for p in problems)
    new_names = {m.name for m in new.models}

    order: list[tuple[float, ModelConfig]] = []  # (line in the new file, model)
    kept: list[str] = []
    for model in new.models:
        if model.name not in broken:  # a duplicate name: the name is broken
            order.append((_line(model.line), model))
    for model in old.models:
        if model.name in broken:
            lines = [_line(p.line) for p in problems if p.entry == model.name]
            order.append((min(lines, default=math.inf), model))
            kept.append(model.name)
        elif unnamed and model.name not in new_names:
            order.append((math.inf, model))
            kept.append(model.name)
    order.sort(key=lambda item: item[0])  # stable: ties keep new-file order, then old
    models = tuple(model for _, model in order)
    config = dataclasses.replace(new, models=models)
    for group in _broken_settings(problems):  # a typo must not change how models are run
        config = dataclasses.replace(config, **{group: getattr(old, group)})
        kept.append(f"[{group}]" if group in ("pressure", "restart", "safety", "api")
                    else group)

    added = tuple(m for m in models if old.model(m.name) is None)
    removed = tuple(m.name for m in old.models if config.model(m.name) is None)
    changed = tuple(m for m in models if _differs(old.model(m.name), m))
    settings = tuple(s for s in SETTINGS if getattr(old, s) != getattr(config, s))
    return ConfigDiff(added, removed, changed, tuple(kept), settings, config)


def describe(diff: ConfigDiff) -> str:
    """One line a person reads: "config reloaded: added chat-2; removed old; ..."."""
    if diff.unusable is not None:
        return f"config not reloaded, nothing changed: {diff.unusable}"
    parts = []
    if diff.added:
        parts.append("added " + _names(m.name for m in diff.added))
    if diff.removed:
        parts.append("removed " + _names(diff.removed))
    if diff.changed:
        parts.append(f"changed {_names(m.name for m in diff.changed)} (applies at next load)")
    if diff.kept:
        parts.append(f"kept {_names(diff.kept)} as before (new entry has a problem)")
    if diff.settings_changed:
        shown = [_SETTING_NAMES.get(s, s) for s in diff.settings_changed]
        parts.append(f"{_names(shown)} settings changed")
    return "config reloaded: " + "; ".join(parts) if parts else "config unchanged"


def _unusable(new: Config, problems: Sequence[ConfigProblem]) -> str | None:
    """Why the file yielded nothing (unreadable, not TOML), or None when it was parsed."""
    if new.models:
        return None
    for problem in problems:
        if problem.whole_file:
            return " ".join(str(problem).split())  # one line
    return None


def _broken_settings(problems: Sequence[ConfigProblem]) -> list[str]:
    """The global settings (groups) that have a problem in the new file: they keep their
    running values instead of falling back to defaults."""
    groups = []
    for problem in problems:
        if problem.entry is not None or problem.field is None:
            continue
        group = _SETTING_OF.get(problem.field)
        if group is not None and group not in groups:
            groups.append(group)
    return groups


def _unnamed(problem: ConfigProblem) -> bool:
    """A model entry's problem that names no model: ``models[3]``, or ``models`` itself
    is not an array of tables."""
    if problem.entry is None:
        return problem.field == "models"
    return _UNNAMED.fullmatch(problem.entry) is not None


def _differs(old: ModelConfig | None, new: ModelConfig) -> bool:
    """Settings differ (the header line moves when lines are inserted above)."""
    return old is not None and dataclasses.replace(old, line=None) != dataclasses.replace(
        new, line=None)


def _line(line: int | None) -> float:
    return math.inf if line is None else float(line)


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)
