"""Shared helpers for the format assessor tests: its folder goes on ``sys.path``
so test modules can import :mod:`format_kit`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
