"""The installed distribution's version, for ``wage_jax.__version__`` and ``wage_torch.__version__``."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "wage-jax"


def installed_version() -> str:
    """``wage-jax``'s version from the package metadata; ``"0+unknown"`` when run from a bare checkout."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
