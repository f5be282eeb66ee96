"""Starting, stopping, adopting and finding sandboxes."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from .. import netguard, reaper
from ..config import EffectiveConfig, SandboxConfig
from ..config.options import DEFAULT_DISK_MB, GUARDED_NETWORK
from ..engine import Engine, ExecStream, connect
from ..engine.base import CreateAgain
from ..errors import SandboxConflict, SandboxError, SandboxNotFound
from . import binds, workspace
from .bundle_volume import MOUNT, ensure_volume
from .core import Attachment, SandboxCore
from .images import ProgressCallback, ensure_image
from .remote import refuse_host_mounts_on_remote_engine
from .request import LABEL, LABEL_PERSISTENT, LABEL_PROFILE, create_request

log = logging.getLogger(__name__)


class Lifecycle(SandboxCore):
    """start/stop, the lifeline, handing over, reconnecting, listing."""

    def start(self, progress: ProgressCallback | None = None, *, ipython: bool = False,
              on_image: Callable[[str], None] | None = None,
              main: Sequence[str] | None = None) -> Lifecycle:
        """Create and start the container (pulling the image if needed). Returns self.

        ``ipython``: mount agentkernel's IPython read-only at ``bundle_volume.MOUNT`` (the
        runner uses it when the image has no IPython), filling its volume on first use.
        ``on_image`` gets the image's id as soon as it is known, before the create.
        ``main``: a program (argv) to run as the container's main process, on the lifeline's
        stdin and with its output on the lifeline's connection (``take_main_stream``), which
        saves an exec; it must end at its stdin's EOF, and should outlive what it runs. Only
        an ephemeral sandbox on a local engine runs it (a persistent one has no lifeline, and
        a remote engine's lifeline is only held); otherwise it is ignored.
        """
        engine = self.engine
        eff = self.check_network()
        # The engine's host size is asked beside the create and start (Podman's /info takes
        # 0.35 s); a refused limit removes the container just started.
        # So is the look for credentials in the host folders it is given (CPU on this host,
        # while the engine answers the image's requests below); and, once the image is
        # there, the workspace's volumes are made while the bundle's volume is looked up.
        beside = ThreadPoolExecutor(max_workers=3, thread_name_prefix="agentkernel-beside")
        host_mounts = None
        try:
            limits = beside.submit(self._check_limits, eff.cpus, eff.memory_mb)
            hiding = beside.submit(self._hiding_mounts, eff)
            refuse_host_mounts_on_remote_engine(eff, engine)
            image_id = self.image_id = ensure_image(engine, eff.image, progress)
            if on_image is not None:
                on_image(image_id)
            host_mounts = beside.submit(self._host_mounts, eff)
            volumes = [(ensure_volume(engine, eff.image, eff.labels, image_id), MOUNT)
                       ] if ipython else []
            main = main if main and not eff.persistent and not engine.remote else None
            mounts, expected = host_mounts.result()
            mounts += hiding.result()
            request = self._disk_limit(create_request(eff, volumes, main, mounts), image_id)
            if self.workspace_id and eff.workspace:  # mounts[0] is the workspace's
                request["Labels"] = {**request["Labels"], **workspace.container_labels(
                    self.workspace_id, eff.workspace, mounts[0])}
            container_id = self._create(request)
            try:
                self._start_created(container_id, limits, bool(main))
            except CreateAgain as stale:  # removed; made again on what the engine says now
                log.info("%s", stale)
                container_id = self._create(request)
                self._start_created(container_id, limits, bool(main))
        finally:
            if host_mounts is not None:  # what it mounted on this host is released below
                wait([host_mounts])
            beside.shutdown(wait=False)
            if self.workspace_id:  # the container holds its own copy of the workspace
                workspace.release_mounts(self.workspace_id)
        if expected:
            self._verify_binds(expected)
        log.info("sandbox %s started (%s)", self.name, container_id[:12])
        return self

    def _host_mounts(self, eff: EffectiveConfig,
                     ) -> tuple[list[dict[str, Any]], dict[str, binds.Identity]]:
        """The workspace's mount (its volumes made when missing; what hides credentials
        comes after it, ``_hiding_mounts``); and each bind mount's target with the identity
        its host folder has now (``binds.identity``: no link on the way). The workspace's
        folder is walked the same way first: the engine mounts its overlay by that path."""
        mounts: list[dict[str, Any]] = []
        if eff.workspace:
            binds.identity(eff.workspace)  # a part of it swapped for a link is refused
            self.workspace_id = eff.workspace_id or f"{eff.name}-{secrets.token_hex(4)}"
            mounts.append(workspace.workspace_mount(self.engine, eff.workspace,
                                                    self.workspace_id, eff.labels, eff.runtime))
        expected = {bind.target: binds.identity(bind.source)
                    for bind in eff.binds if bind.is_bind}
        return mounts, expected

    @staticmethod
    def _hiding_mounts(eff: EffectiveConfig) -> list[dict[str, Any]]:
        """What hides the credentials in every host folder the sandbox is given (the
        workspace at its own path, each bind at its target)."""
        folders = [(eff.workspace, eff.workspace)] if eff.workspace else []
        folders += [(bind.source, bind.target) for bind in eff.binds
                    if bind.is_bind and os.path.isdir(bind.source)]
        return [mount for source, target in folders
                for mount in workspace.hiding_mounts(source, target)]

    def _verify_binds(self, expected: dict[str, binds.Identity]) -> None:
        """Remove the sandbox unless each bind target holds the host folder checked."""
        def stat_inside(target: str) -> binds.Identity | None:
            result = self.exec(["stat", "-L", "-c", "%d %i", "--", target], timeout=10)
            fields = result.stdout.split()
            if result.ok and len(fields) == 2 and all(f.isdigit() for f in fields):
                return int(fields[0]), int(fields[1])
            return None

        try:
            info = self.engine.inspect_container(self.container_id)
            binds.verify(info.pid if info else None, expected, stat_inside)
        except SandboxError:
            self.remove()
            raise

    def take_main_stream(self) -> ExecStream | None:
        """The stream of the main program ``start(main=...)`` ran (once; None when it did
        not run one): write its stdin, read its output; closing it leaves the lifeline."""
        stream, self._main_stream = self._main_stream, None
        return stream

    def check_network(self) -> EffectiveConfig:
        """The effective configuration with the network only where it is guarded: a sandbox
        bound for the guarded network whose rules are not in place on this host (see
        agentkernel.netguard) starts without the network when the profile chose it (said in
        ``notes``), and is refused (SandboxError) when the network was asked for. The start
        calls it; a caller may call it first, to refuse before anything else is done."""
        eff = self.effective
        if self._network_checked or not eff.network or eff.network_name != GUARDED_NETWORK:
            return eff
        if netguard.available(self.engine):
            self._network_checked = True
            return eff
        where = (f"the engine at {self.engine.base_url} has no {GUARDED_NETWORK} network"
                 if self.engine.remote else "its firewall rules are not in force: `agentkernel "
                 "network setup` has not run (as root) since this host started or since a "
                 "firewall reload removed or changed them")
        why = (f"the guarded network is not set up ({where}; an operator may instead set "
               "c.SandboxConfig.network_name = '' for the engine's bridge, from which the "
               "host's services can be reached)")
        if self.config.network or eff.ports:
            raise SandboxError(f"the network is not available: {why}")
        self.notes.append(f"the sandbox has no network: {why}")
        log.warning("sandbox %s has no network: %s", self.name, why)
        self.effective = eff.replace(network=False)
        self._network_checked = True
        return self.effective

    def _start_created(self, container_id: str, limits: Future[None], main: bool) -> None:
        """Tie the created container to this process, start it, and hold it once ``limits``
        (the host size check) passed; a failure removes it. ``main``: its main process's
        output comes on the lifeline too (before the start, so none of it is lost)."""
        eff, engine = self.effective, self.engine
        attachment = Attachment(container_id)
        try:
            if not eff.persistent:
                endpoint = engine.endpoint()
                volumes = workspace.volume_names(self.workspace_id) if self.workspace_id else ()
                attachment.reaper_fd = reaper.start(endpoint.url, container_id,
                                                    endpoint.to_dict()["tls"], volumes)
                if self.workspace_id and not eff.workspace_id:  # this sandbox's own workspace
                    os.write(attachment.reaper_fd, reaper.DISCARD)
            with self._errors(f"starting sandbox {self.name}"):
                engine.check_runtime(container_id, eff.runtime)
                if not eff.persistent:
                    attachment.lifeline = engine.attach_stdin(container_id, output=main)
                engine.start_container(container_id)
            limits.result()
            if main and attachment.lifeline is not None:
                self._main_stream = engine.adopt_exec(None, os.dup(attachment.lifeline.fileno()))
        except (SandboxError, OSError) as err:
            engine.remove_container(container_id)
            attachment.release()
            if isinstance(err, OSError):
                raise SandboxError(f"starting sandbox {self.name} failed: {err}") from None
            raise
        self._hold(attachment)

    def _disk_limit(self, request: dict[str, Any], image_id: str) -> dict[str, Any]:
        """``request`` with its writable root's size limit where the engine's storage can
        apply one; without, and said in ``notes``, where it cannot."""
        host = request.get("HostConfig", {})
        why = "StorageOpt" in host and self.engine.storage_quota_refusal(image_id)
        if not why:
            return request
        said = (f"the sandbox's root file system has no size limit (disk_mb "
                f"{self.effective.disk_mb or DEFAULT_DISK_MB}): the engine's storage cannot "
                f"apply one ({why}), so a cell can fill the engine's disk")
        if self.effective.disk_mb is None:  # the default: the operator's log, not every cell
            log.warning("%s", said)
        else:  # a size the operator chose
            self.notes.append(said)
        return {**request, "HostConfig": {k: v for k, v in host.items() if k != "StorageOpt"}}

    def _create(self, request: dict[str, Any]) -> str:
        """Create the container; a taken name is refused by the engine itself (no round trip
        of its own on every start), and named here with what holds it."""
        try:
            return self.engine.create_container(request, self.container_name)
        except SandboxConflict as conflict:
            existing = None
            with contextlib.suppress(SandboxError):
                existing = self.engine.inspect_container(self.container_name)
            state = f" ({existing.state})" if existing is not None else ""
            raise SandboxConflict(
                f"a sandbox named {self.name!r} already exists{state}: connect to it "
                f"(%sandbox connect {self.name}) or choose another --name"
            ) from conflict

    def stop(self) -> None:
        """Stop the sandbox; its container is removed unless it is persistent."""
        if self._attachment is None:
            return
        try:
            if self.effective.persistent:
                self.engine.stop_container(self.container_id)
            else:
                self.engine.remove_container(self.container_id)
        except SandboxError as err:
            log.warning("stopping sandbox %s: %s", self.name, err)
        finally:
            self.detach()

    def leave_to_reaper(self) -> bool:
        """Let go of an ephemeral sandbox and leave its removal to its host-side reaper: this
        process's lifeline and reaper pipe close, and the reaper removes the container a
        moment later (about 0.2 s) while the caller goes on. False, doing nothing, when no
        reaper watches it (a persistent sandbox, or one not started here)."""
        held = self._attachment
        if held is None or self.effective.persistent or held.reaper_fd is None:
            return False
        self.detach()
        return True

    def remove(self) -> None:
        """Remove the container, persistent or not, even after stop(); and its workspace when
        it had one of its own."""
        with contextlib.suppress(SandboxError):
            target = self._attachment.container_id if self._attachment else self.container_name
            self.engine.remove_container(target)
        self.stop()
        if self.workspace_id and not self.effective.workspace_id:
            workspace.discard(self.engine, self.workspace_id)

    def discard_workspace(self) -> None:
        """Have the workspace's volumes (what cells wrote in it) removed with the sandbox: by
        its reaper once the container is gone, when one watches it; else call after stop()."""
        held = self._attachment
        if held is not None and held.reaper_fd is not None:
            with contextlib.suppress(OSError):
                os.write(held.reaper_fd, reaper.DISCARD)
        elif self.workspace_id and self._attachment is None:
            workspace.discard(self.engine, self.workspace_id)

    def lifeline_fds(self) -> tuple[int, int]:
        """(lifeline socket, reaper pipe): the fds that keep an ephemeral container alive; a
        process they are handed to (pass_fds) owns the container from then on."""
        held = self._attachment
        if held is None or held.lifeline is None or held.reaper_fd is None:
            raise SandboxError(f"sandbox {self.name} has no lifeline (persistent or not started)")
        return held.lifeline.fileno(), held.reaper_fd

    def detach(self) -> None:
        """Let go of the container without removing it: drop the finalizer, close this
        process's lifeline and reaper pipe (another process may hold them now) and forget the
        container."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if (stream := self.take_main_stream()) is not None:
            stream.close()
        if self._attachment is not None:
            self._attachment.release()
        self._attachment = None

    def __enter__(self) -> Lifecycle:
        if self._attachment is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- other processes' sandboxes --------------------------------------------------------
    @classmethod
    def adopt(cls, engine: Engine, container_id: str, lifeline_fds: tuple[int, int],
              config_values: dict[str, Any]) -> Lifecycle:
        """A sandbox started by another process, whose lifeline socket and reaper pipe this
        one inherited."""
        lifeline, reaper_fd = lifeline_fds
        attachment = Attachment(container_id, socket.socket(fileno=lifeline), reaper_fd)
        return cls(SandboxConfig(**config_values), engine=engine, attach=attachment)

    @classmethod
    def _described(cls, engine: Engine, container_id: str) -> Lifecycle | None:
        """The sandbox in container ``container_id`` as its labels and limits describe it
        (None when it has gone)."""
        info = engine.inspect_container(container_id)
        if info is None:
            return None
        config = SandboxConfig(
            image=info.image or "unknown",
            name=info.labels.get(LABEL),
            persistent=info.labels.get(LABEL_PERSISTENT) == "true",
            profile=info.labels.get(LABEL_PROFILE, "moderate"),
        )
        sandbox = cls(config, engine=engine, attach=Attachment(info.id))
        sandbox.effective = sandbox.effective.replace(
            cpus=info.cpus, memory_mb=info.memory_mb, network=info.network, user=info.user)
        return sandbox

    @classmethod
    def connect(cls, name: str, *, engine: Engine | None = None) -> Lifecycle:
        """Reattach to an existing (persistent) sandbox by name, starting it if stopped."""
        engine = engine or connect()
        found = engine.list_containers([f"{LABEL}={name}"], all=True)
        sandbox = cls._described(engine, found[0].id) if found else None
        if sandbox is None:
            raise SandboxNotFound(
                f"no sandbox named {name!r} (see `agentkernel list` for the ones that exist)"
            )
        if not sandbox.is_running:
            with sandbox._errors(f"restarting sandbox {name}"), \
                    workspace.restart_mounts(engine, found[0].labels):
                engine.start_container(sandbox.container_id)
        return sandbox

    @classmethod
    def list(cls, *, engine: Engine | None = None, all: bool = False) -> list[Lifecycle]:
        """The sandboxes that run now (``all=True``: stopped ones too)."""
        engine = engine or connect()
        found = (cls._described(engine, c.id) for c in engine.list_containers([LABEL], all=all))
        return [sandbox for sandbox in found if sandbox is not None]
