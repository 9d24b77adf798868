"""Exception types of QuantShift.

Every error names what is wrong and where (file, row or time, symbol, key).
"""


class QuantShiftError(Exception):
    """Base class of all QuantShift errors."""


class DataError(QuantShiftError, ValueError):
    """Market data that cannot be loaded or fails validation."""


class ConfigError(QuantShiftError, ValueError):
    """A configuration or parameter value that is not allowed."""


class UnknownNameError(QuantShiftError, KeyError):
    """A strategy, symbol, column or data source that does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
