"""The exceptions unseen raises on purpose: each message names what is wrong and what to do next.

The CLI prints these as one paragraph, without a traceback; anything else is a bug in unseen.
"""

from __future__ import annotations


class UnseenError(Exception):
    """Base class: the message is meant for the user, complete with the fix."""


class SpecError(UnseenError):
    """An experiment spec is malformed: names the field, the value, the rule and the fix."""


class DataError(UnseenError):
    """A dataset cannot be loaded or is not what it should be."""


class DataUnavailableError(DataError):
    """A dataset file is missing and cannot be downloaded here."""


class ChecksumError(DataError):
    """A dataset file's SHA-256 differs from the published one."""


class ModelError(UnseenError):
    """A model cannot be built for the data it was given."""


class CheckpointError(UnseenError):
    """A run folder or checkpoint cannot be resumed."""
