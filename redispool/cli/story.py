"""The newcomer's commands: double and demo (filled in once the workers exist)."""

from __future__ import annotations
