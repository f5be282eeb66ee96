"""A folder that holds a listening unix socket (a door to a host service) is never given to a
sandbox; the host's protected paths are worked out at each check, or once for a whole start
(``one_check``), never longer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agentkernel.config.hostpaths import one_check, protected_paths
from agentkernel.config.mounts import check_host_folder
from agentkernel.config.profiles import PROFILE_TABLE
from agentkernel.errors import ConfigError

MODERATE = PROFILE_TABLE["moderate"]


def _listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


def test_a_folder_holding_a_host_service_socket_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "run").mkdir(parents=True)
    assert check_host_folder(str(project), MODERATE, write=False) == project.resolve()
    with _listen(project / "run" / "service.sock"):
        with pytest.raises(ConfigError, match="holds a unix socket of a host service"):
            check_host_folder(str(project), MODERATE, write=False)


def test_one_check_works_the_paths_out_once_and_only_within_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    with one_check():
        first = protected_paths(write=False)
        with one_check():  # a block within belongs to the outer one
            assert protected_paths(write=False) is first
        assert protected_paths(write=True) is not first, "one list per mode"
        with _listen(project / "late.sock"):
            # the start's checks went before this socket: one start, one view of the host
            assert check_host_folder(str(project), MODERATE, write=False) == project.resolve()
            assert protected_paths(write=False) is first
    assert protected_paths(write=False) is not protected_paths(write=False), "fresh outside"
    with _listen(project / "again.sock"), pytest.raises(ConfigError, match="host service"):
        check_host_folder(str(project), MODERATE, write=False)


def test_agentkernel_s_own_cache_is_never_given_to_a_sandbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What later starts trust lives there (Podman's confined seccomp profile, the engines'
    recorded answers): a cell that could write it would loosen the next sandbox."""
    from agentkernel.cache import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = cache_dir()
    (cache / "podman-seccomp-0123456789abcdef.json").write_text("{}")
    for folder, write in ((cache, True), (cache, False), (tmp_path / "xdg", True),
                          (cache / "podman-seccomp-0123456789abcdef.json", False)):
        with pytest.raises(ConfigError, match="agentkernel's own cache"):
            check_host_folder(str(folder), MODERATE, write=write)
    sibling = tmp_path / "xdg" / "pip"
    sibling.mkdir()
    assert check_host_folder(str(sibling), MODERATE, write=True) == sibling.resolve()
