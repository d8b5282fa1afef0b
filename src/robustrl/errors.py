"""The one exception family users see: each carries a one-line message naming the problem."""


class RobustRLError(Exception):
    """Base class: the CLI prints ``robustrl: error: <message>`` and exits non-zero."""


class ConfigError(RobustRLError):
    """A bad configuration value, key, preset, algorithm or environment."""


class EnvError(RobustRLError):
    """The environment cannot be used (unknown id, unsupported spaces, NaN/inf values)."""


class CheckpointError(RobustRLError):
    """A run directory or checkpoint that is missing, corrupt, or belongs to another setup."""
