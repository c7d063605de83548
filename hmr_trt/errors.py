"""The project's errors: one base class and a few specific ones.

Messages name the thing, what arrived, what was expected, and the fix when there is one.
The CLIs turn any ``HmrTrtError`` into one readable line and exit code 1.
"""

from __future__ import annotations


class HmrTrtError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(HmrTrtError):
    """A configuration value (window, batch profile, precision ...) is invalid."""


class InputSpecError(HmrTrtError):
    """An input tensor has the wrong name, dtype or shape."""


class CheckpointError(HmrTrtError):
    """A checkpoint or body-model file is missing, corrupt or does not match the model."""


class ExportError(HmrTrtError):
    """The exported graph failed validation (checker, shape inference, TensorRT op preflight)."""


class EngineError(HmrTrtError):
    """A TensorRT engine cannot be built or does not match this machine."""


class GraphError(HmrTrtError):
    """A graph file is not the one its manifest records, or contradicts the model contract."""


class ParityError(HmrTrtError):
    """Outputs drifted from the reference beyond the written-down tolerance."""


class OutputDirError(HmrTrtError):
    """The output directory cannot be written."""
