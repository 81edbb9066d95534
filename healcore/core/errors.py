"""One exception family for every mistake a user can make.

Each message is a single line that names what is wrong and what to change; the CLI and the dashboard
print it as is, never a traceback.
"""


class HealcoreError(Exception):
    """Base class: a user-facing error with a one-line message."""


class ConfigError(HealcoreError, ValueError):
    """A run or grid setting is invalid."""


class CorruptionSpecError(ConfigError):
    """A corruption spec cannot be parsed or does not fit the model."""


class DataError(HealcoreError, ValueError):
    """A dataset is missing, malformed, or unusable for classification."""


class ModelError(HealcoreError, ValueError):
    """A model cannot be loaded or its architecture is not supported."""


class StoreError(HealcoreError, OSError):
    """The run store cannot be used (not a folder, not writable, bad run id)."""


class DiskFullError(StoreError):
    """A write found no space (ENOSPC) or no quota (EDQUOT) left; the file it was writing is as it was."""


class RunBusyError(HealcoreError):
    """Another process is executing the same run right now."""


class TrainingDiverged(HealcoreError, ArithmeticError):
    """The loss became NaN or infinite."""


class Interrupted(HealcoreError):
    """The run was asked to stop (SIGTERM/SIGINT); it can be resumed."""


def shown(value, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr cut short, without walking a huge or deeply nested value (a
    YAML file of aliases can expand into billions of items)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 2, 4, 4, 4, 4
    r.maxstring = r.maxother = r.maxlong = limit
    return r.repr(value)


def first_line(err: BaseException) -> str:
    """An exception as one line: its message's first line, or its type's name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
