"""Exceptions raised at the project's boundaries.

Every message names the offending value and, where there is one, the fix.
"""

from __future__ import annotations


class AnomalyError(Exception):
    """Base class of the project's own errors."""


class NotFittedError(AnomalyError):
    """A detector was asked to score or save before ``fit`` ran."""


class ArtifactError(AnomalyError):
    """A model directory is missing, incomplete, corrupted or of another schema/detector."""


class ContractError(AnomalyError):
    """A record or data file does not follow its contract (see TECHNICAL.md)."""


class DataError(AnomalyError):
    """Input data cannot be used as asked (for example a series too short to train on)."""


class InfraError(AnomalyError):
    """A local service (Kafka broker, Spark) could not be installed, started or reached."""
