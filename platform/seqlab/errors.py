"""Errors a user can act on. The CLI prints them as one message, without a traceback."""
from __future__ import annotations

import errno
import os
import re


class SeqlabError(Exception):
    """Base class: the message names the field, file or plugin and the offending value."""

    # Raised alike on every rank (a verdict they agreed on): the command line prints it on rank 0 only.
    agreed = False


class ConfigError(SeqlabError, ValueError):
    """A configuration value is out of range, of the wrong type, or names nothing that exists."""


class PluginError(SeqlabError):
    """A plugin is unknown, registered twice, or failed to import."""


class DataError(SeqlabError):
    """An input file or prepared corpus cannot be used."""


def require(ok: bool, field: str, value: object, why: str) -> None:
    """Raise ConfigError("field=value: why") unless `ok`; used by every config's __post_init__."""
    if not ok:
        raise ConfigError(f"{field}={value!r}: {why}")


# OmegaConf's wording of a wrong type, and what to tell the user instead.
_TYPE_PROBLEMS = (
    (re.compile(r"could not be converted to Integer"), "must be an integer"),
    (re.compile(r"could not be converted to Float"), "must be a number"),
    (re.compile(r"is not a valid bool"), "must be true or false"),
    (re.compile(r"is not a ListConfig, list or tuple"), "must be a list"),
    (re.compile(r"Cannot assign \w+ to Dict"), "must be a mapping"),
    (re.compile(r"^Key '.*' not in '"), "no such field"),
    (re.compile(r"is not Optional"), "must be set (null is not allowed here)"),
)
_INTERPOLATION = re.compile(r"^\w+ raised while resolving interpolation: ")


def omegaconf_error(err: Exception, prefix: str = "") -> ConfigError:
    """An OmegaConf error about one value (wrong type, unknown key, failed interpolation) as ConfigError
    "field=value: why". `prefix` is the path of the node that was validated, when OmegaConf knows only the key
    within it (a node built outside the composed config, such as a mixture's child)."""
    key = ".".join(part for part in (prefix, str(getattr(err, "full_key", "") or "")) if part)
    message = str(getattr(err, "msg", "") or err)
    why = _INTERPOLATION.sub("", message.splitlines()[0] if message else type(err).__name__)
    why = next((fix for pattern, fix in _TYPE_PROBLEMS if pattern.search(why)), why)
    value = getattr(err, "value", None)
    if why == "must be an integer" and isinstance(value, float) and value.is_integer():
        why += f" (write {int(value)})"  # 1e3 is a float in YAML
    if not key:
        return ConfigError(why)
    return ConfigError(f"{key}={value!r}: {why}" if value is not None else f"{key}: {why}")


class WriteError(SeqlabError):
    """A file could not be written (full disk, quota, I/O error); what was written before is intact."""

    def __init__(self, path: object, cause: str):
        self.path, self.cause = path, cause
        super().__init__(f"cannot write {path}: {cause}")


def write_failure(path: object, err: BaseException) -> WriteError:
    """WriteError for `err` (an OSError, or what a library made of one) while writing `path`."""
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code:
        cause = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    else:
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
    return WriteError(path, cause)
