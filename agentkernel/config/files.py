"""Configuration files: ``agentkernel_config.{json,py}`` on the Jupyter config path."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from ..errors import ConfigError


def load_config_files(basename: str = "agentkernel_config") -> Config:
    """Merge ``basename.json`` and ``basename.py`` from every folder of the Jupyter config
    path, the user's own folder last (so it wins)."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    merged = Config()
    for folder in reversed(jupyter_config_path()):
        for loader_cls, filename in (
            (JSONFileConfigLoader, f"{basename}.json"),
            (PyFileConfigLoader, f"{basename}.py"),
        ):
            if Path(folder, filename).is_file():
                try:
                    merged.merge(loader_cls(filename, path=folder).load_config())
                except Exception as err:
                    raise ConfigError(
                        f"cannot read {Path(folder, filename)}: {str(err).splitlines()[0]}"
                    ) from None
    return merged
