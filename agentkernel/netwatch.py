"""The guard's keeper: ``agentkernel network watch`` keeps the guard's table as setup left it.

A firewall reload (``nft flush ruleset``, a firewall manager's restart) or anyone with
CAP_NET_ADMIN can remove or change the guard's table (agentkernel/netguard.py) at any time. A
kernel that may read the ruleset notices at its next start (``netguard.in_force``); a kernel
run by a user may not read it (netlink answers EPERM), so it could not tell. The keeper, a
root process that setup starts (once per boot, as the rules), closes both gaps:

- it listens to nf_tables' change notifications (netlink group NFNLGRP_NFTABLES; every
  ``POLL_S`` seconds too, should one be lost), and on each change compares the table with
  setup's digest (``netguard.TABLE_MARKER``);
- the table as setup left it is remembered (``nft list table``); a table changed or gone is
  put back as it was in one transaction, milliseconds later, and setup's digest is then the
  new table's; when it cannot be put back, setup's digest is removed, so no kernel starts a
  sandbox on the guarded network until ``agentkernel network setup`` runs again;
- it records itself in ``netguard.WATCH_MARKER`` (its pid and start time, root's file in
  root's folder): a kernel that cannot read the ruleset trusts setup's digest only while that
  process lives (``netguard.kept``).

Setup rewriting the table (``netguard.guard``) holds the markers' lock while it writes the
table and its digest; the keeper takes the same lock, so it never mistakes setup for a change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import signal
import socket
from pathlib import Path

from . import netguard, nftstate, procs
from .errors import SandboxError, one_line

log = logging.getLogger(__name__)

NFNLGRP_NFTABLES = 7  # nf_tables' change notifications
POLL_S = 5.0  # a check without a notification (one lost to a full socket buffer)


def restore_script(listing: str) -> str:
    """The nft script that puts the table back as ``listing`` (``nft list table``) shows it,
    whatever is there now, in one transaction."""
    table = f"inet {netguard.TABLE}"
    return f"add table {table}\ndelete table {table}\n{listing}"


class Keeper:
    """The table's last good listing, and the check made at each change."""

    def __init__(self, markers: Path) -> None:
        self.markers = markers
        self.listing: str | None = None  # the table as setup left it, once seen
        self.digest = ""  # the digest of that listing's table

    def check(self) -> str:
        """Compare the table with setup's digest, under setup's lock: remember it when they
        agree, put it back when not (setup's digest removed when it cannot be); what was
        done: "kept", "restored", "unguarded", or "waiting" (no digest of setup's)."""
        self.markers.mkdir(mode=0o755, exist_ok=True)
        with open(self.markers / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            recorded = _read(self.markers / netguard.TABLE_MARKER)
            state = nftstate.read_table("inet", netguard.TABLE)
            if recorded and state is not None and state.digest == recorded:
                if state.digest != self.digest:  # a table setup made (again): remembered
                    self.listing = netguard.run_nft("list", "table", "inet", netguard.TABLE)
                    self.digest = state.digest
                return "kept"
            if not recorded:
                return "waiting"
            try:
                if self.listing is None:
                    raise SandboxError("it differed from setup's before this keeper saw it")
                netguard.run_nft("-f", "-", script=restore_script(self.listing))
                state = nftstate.read_table("inet", netguard.TABLE)
                if state is None:
                    raise SandboxError("the table is still missing")
            except (SandboxError, OSError) as err:
                (self.markers / netguard.TABLE_MARKER).unlink(missing_ok=True)
                log.error("the guard's table could not be put back: %s; sandboxes start "
                          "without the guarded network until agentkernel network setup",
                          one_line(err))
                return "unguarded"
            netguard.write_marker(self.markers / netguard.TABLE_MARKER, state.digest)
            self.digest = state.digest
            log.warning("the guard's table was changed or removed: put back as setup left it")
            return "restored"


def run(markers: Path | None = None) -> None:
    """Keep the table until SIGTERM or SIGINT (root); records itself in
    ``netguard.WATCH_MARKER`` while it runs."""
    markers = markers or netguard.MARKERS
    if os.geteuid() != 0:
        raise SandboxError("agentkernel network watch needs root: it reads and writes the "
                           "firewall's rules")
    keeper = Keeper(markers)
    notifications = _subscribe()
    stop = False

    def finish(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    woken, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake)  # a signal ends the wait below at once
    me = {"pid": os.getpid(), "started": procs.start_time(os.getpid())}
    _check(keeper)
    netguard.write_marker(markers / netguard.WATCH_MARKER, json.dumps(me))
    log.info("keeping the guard's table (pid %d)", os.getpid())
    try:
        while not stop:
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([notifications, woken], [], [], POLL_S)
                if notifications in ready:
                    _drain(notifications)
            if not stop:
                _check(keeper)
    finally:
        with contextlib.suppress(OSError, ValueError):
            marker = markers / netguard.WATCH_MARKER
            if json.loads(marker.read_text(encoding="utf-8")) == me:
                marker.unlink()
        notifications.close()
        signal.set_wakeup_fd(-1)
        os.close(woken)
        os.close(wake)


def _check(keeper: Keeper) -> None:
    """One check; a failure to read or list the table is logged, and the next one tries
    again."""
    try:
        keeper.check()
    except (SandboxError, OSError) as err:
        log.error("the guard's table could not be checked: %s", one_line(err))


def _subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                         nftstate.NETLINK_NETFILTER)
    sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
    return sock


def _drain(sock: socket.socket) -> None:
    """Read every notification waiting (their content does not matter: the table is read)."""
    while True:
        try:
            sock.recv(65536)
        except OSError:  # none left (EAGAIN), or ENOBUFS: the check reads the table anyway
            return


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
