"""Exceptions that carry the offending value and the fix; the CLI prints them as one line."""


class DDBenchError(Exception):
    """Base class: a user-facing error whose message says what is wrong and what to do."""


class ConfigError(DDBenchError):
    """A bad option, config key or value (unknown name, impossible IPC, unparsable override)."""


class DataError(DDBenchError):
    """A missing or malformed data root, or an unreadable image."""


class CheckpointError(DDBenchError):
    """A missing, truncated or mismatched checkpoint."""


class DistilledSetError(DDBenchError):
    """A distilled folder that is malformed or does not match the requested run."""


class FetchError(DDBenchError):
    """A download that failed or whose checksum does not match."""


class StorageError(DDBenchError):
    """A write the disk refused: full, read-only or not permitted (the message names the path)."""


class TrainingDivergedError(DDBenchError):
    """A training whose loss became NaN or infinite; the message names the step or epoch and the knob."""


class ResultsError(DDBenchError):
    """A result that cannot be stored as it is (a non-finite metric, say)."""
