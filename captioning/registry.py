"""Names to classes, and objects built from the config section that names them.

A config section reaches its constructor whole (big_vision's `Model(**config.model)`): the
section's keys are the constructor's arguments, so every hyper-parameter is written once, in the
config file. `build` checks the keys against the constructor's signature first, so a key that no
constructor takes, or a required one that is missing, fails with the config path named instead
of deep inside Keras.

Entries are classes, or "module:attribute" strings imported on first use, so that a registry
can list modules that need TensorFlow without importing it.
"""

import importlib
import inspect


def plain(value):
  """ConfigDicts (and dicts of them) as plain dicts; other values unchanged."""
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, dict):
    return {k: plain(v) for k, v in value.items()}
  return value


def arguments(target):
  """The names of the keyword arguments `target` (a class or function) accepts by name."""
  function = target.__init__ if inspect.isclass(target) else target
  params = inspect.signature(function).parameters.values()
  return [
    p.name
    for p in params
    if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
  ]


def _required(target):
  function = target.__init__ if inspect.isclass(target) else target
  return [
    p.name
    for p in inspect.signature(function).parameters.values()
    if p.name != "self"
    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    and p.default is p.empty
  ]


def check_section(target, section, where, provided=()):
  """Checks that `target(**section, **provided)` names only arguments `target` takes.

  Args:
    target: a class or function.
    section: the config section (a dict or ConfigDict) meant for it.
    where: the section's config path, for messages, e.g. "config.model.decoder".
    provided: argument names the caller supplies itself (not from the section).

  Raises:
    ValueError: naming each unknown key, each key that clashes with a provided argument, and
      each required argument that neither the section nor the caller supplies.
  """
  name = getattr(target, "__name__", repr(target))
  accepted = arguments(target)
  keys = list(plain(section))
  unknown = [k for k in keys if k not in accepted]
  if unknown:
    takes = [a for a in accepted if a not in provided]
    raise ValueError(
      f"Bad config: {', '.join(f'{where}.{k}' for k in unknown)} is not an argument of "
      f"{name}; it takes {takes}."
    )
  clash = [k for k in keys if k in provided]
  if clash:
    raise ValueError(
      f"Bad config: {', '.join(f'{where}.{k}' for k in clash)} is set by the code, not by "
      "the config; remove it."
    )
  missing = [a for a in _required(target) if a not in keys and a not in provided]
  if missing:
    raise ValueError(
      f"Bad config: {where} lacks {', '.join(missing)}, which {name} needs (no default)."
    )


def call_with_section(target, section, where, **provided):
  """Calls `target(**section, **provided)` after `check_section`.

  A ValueError or TypeError that the constructor raises about a value is re-raised with the
  section's path in front, so the message says which config key to change.
  """
  check_section(target, section, where, provided)
  try:
    return target(**plain(section), **provided)
  except (ValueError, TypeError) as error:
    if str(error).startswith("Bad config"):
      raise
    raise ValueError(f"Bad config: {where}: {error}") from error


class Registry:
  """A name -> class table for one kind of component (datasets, encoders, ...).

  Args:
    where: the config path of the name that selects an entry, for messages, e.g.
      "config.model.encoder.name".
    entries: name -> class, or name -> "module:attribute" imported on first use.
  """

  def __init__(self, where, entries=None):
    self.where = where
    self._entries = dict(entries or {})
    self._fixed = {}  # name -> arguments the name itself fixes

  def register(self, name, **fixed):
    """A class decorator that adds the class under `name`.

    Args:
      name: the name a config section gives in its `name` key.
      **fixed: arguments the name fixes (e.g. one class for several backbones, each name
        fixing which); a section may not set them.
    """

    def add(cls):
      if name in self._entries:
        raise ValueError(f"{self.where} {name!r} is registered twice.")
      self._entries[name] = cls
      self._fixed[name] = fixed
      return cls

    return add

  def names(self):
    return sorted(self._entries)

  def get(self, name):
    """The class registered as `name`."""
    if name not in self._entries:
      raise ValueError(f"Bad config: unknown {self.where} {name!r}; available: {self.names()}.")
    entry = self._entries[name]
    if isinstance(entry, str):
      module, attribute = entry.split(":")
      entry = getattr(importlib.import_module(module), attribute)
      self._entries[name] = entry
    return entry

  def split_name(self, section):
    """(the class a section names with its `name` key, the arguments the name fixes, the rest
    of the section)."""
    section = dict(plain(section))
    if "name" not in section:
      raise ValueError(f"Bad config: {self.where} is missing.")
    name = section.pop("name")
    return self.get(name), dict(self._fixed.get(name, {})), section

  def check(self, section, where, provided=()):
    """Checks a section that names its class with a `name` key (see `check_section`)."""
    cls, fixed, rest = self.split_name(section)
    check_section(cls, rest, where, (*provided, *fixed))

  def build(self, section, where, **provided):
    """Builds the class that `section["name"]` names from the rest of the section."""
    cls, fixed, rest = self.split_name(section)
    return call_with_section(cls, rest, where, **fixed, **provided)
