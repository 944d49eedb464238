"""Errors a user can act on. The CLI prints them as one message, without a traceback."""


class SeqlabError(Exception):
    """Base class: the message names the field, file or plugin and the offending value."""


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
