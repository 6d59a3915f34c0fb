"""The retrieval pipeline: stages (stages.py), their per-document data (fields.py), the folder
it is kept in (folder.py, manifest.py) and its compaction rule (policy.py)."""

from __future__ import annotations

from .core import Pipeline
from .policy import TieredPolicy
from .stages import Hit

__all__ = ["Hit", "Pipeline", "TieredPolicy"]
