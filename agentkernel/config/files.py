"""Configuration files: ``agentkernel_config.{json,py}`` on the Jupyter config path."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from ..errors import ConfigError


def load_config_file(path: Path) -> Config:
    """One traitlets config file (``.json``, or ``.py`` with ``c.Section.option = ...``)."""
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    loader_cls = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
    if not path.is_file():
        raise ConfigError(f"cannot read config file {path}: no such file")
    try:
        return loader_cls(path.name, path=str(path.parent)).load_config()
    except Exception as err:
        raise ConfigError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def load_config_files(basename: str = "agentkernel_config") -> Config:
    """Merge ``basename.json`` and ``basename.py`` from every folder of the Jupyter config
    path, the user's own folder last (so it wins)."""
    from jupyter_core.paths import jupyter_config_path

    merged = Config()
    for folder in reversed(jupyter_config_path()):
        for suffix in (".json", ".py"):
            path = Path(folder, basename + suffix)
            if path.is_file():
                merged.merge(load_config_file(path))
    return merged
