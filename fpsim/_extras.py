"""Optional dependencies (torch): the ImportError a feature raises when the one it needs is not installed.

Invariant: torch-free, so the CLI can catch exactly this error, whose message names the pip extra to install.
"""

from __future__ import annotations

__all__ = ["MissingExtraError"]


class MissingExtraError(ImportError):
    """A feature needs an optional dependency (`name`, e.g. 'torch') that is not installed; the message says
    which `pip install fpsim[...]` brings it. Other ImportErrors are bugs and propagate as such."""
