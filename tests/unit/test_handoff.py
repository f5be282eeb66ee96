"""Handing a started sandbox to another process (agentkernel.handoff): descriptions and fds
over a real socket pair, and the end of it a pool-launched kernel inherits."""

from __future__ import annotations

import os

import pytest

from agentkernel import handoff


def test_fds_travel_with_their_message_and_replace_the_senders() -> None:
    """Three pipe ends sent with a description arrive as new fds of the same pipes, which
    ``with_fds`` puts in the description's place of the sender's numbers."""
    ours, theirs = handoff.message_pair()
    pipes = [os.pipe() for _ in handoff.FD_KEYS]
    write_ends = [w for _, w in pipes]
    sent = {"container_id": "c0ffee", **dict(zip(handoff.FD_KEYS, write_ends, strict=True))}
    handoff.send(theirs, {"image_id": "sha256:1"})
    handoff.send(theirs, {"handoff": sent}, write_ends)
    for write_end in write_ends:
        os.close(write_end)  # the sender's copies: the pipes stay open through the received
    theirs.close()
    messages = list(handoff.receive(ours))
    assert [m for m, _ in messages] == [{"image_id": "sha256:1"}, {"handoff": sent}]
    assert messages[0][1] == []
    received = handoff.with_fds(messages[1][0]["handoff"], messages[1][1])
    assert received["container_id"] == "c0ffee"
    for (read_end, _), key in zip(pipes, handoff.FD_KEYS, strict=True):
        os.write(received[key], key.encode())
        os.close(received[key])
        assert os.read(read_end, 100) == key.encode()
        assert os.read(read_end, 100) == b"", "the received fd was the last write end"
        os.close(read_end)


def test_receive_ends_when_the_sender_is_gone() -> None:
    ours, theirs = handoff.message_pair()
    theirs.close()
    assert list(handoff.receive(ours)) == []


def test_with_fds_needs_every_fd() -> None:
    with pytest.raises(ValueError, match="needs 3 fds, 2 came"):
        handoff.with_fds({}, [5, 6])


def test_a_launched_process_inherits_the_whole_handoff(tmp_path) -> None:
    """What the warm pool does: the handoff is written before the process exists; the process
    inherits the other end (named in its environment), reads the description and gets a
    working fd of the sender's pipe, whose sender copies are closed by then."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    fds = [write_end, *(os.dup(write_end) for _ in range(2))]
    end = handoff.hand_over({"container_id": "c0ffee"}, fds)
    for fd in fds:
        os.close(fd)
    child = (
        "import os\n"
        "from agentkernel import handoff\n"
        "end = handoff.inherited()\n"
        "assert handoff.inherited() is None, 'taken once'\n"
        "(message, fds), = handoff.receive(end)\n"
        "described = handoff.with_fds(message['handoff'], fds)\n"
        "os.write(described['runner_fd'], described['container_id'].encode())\n"
    )
    env = {**os.environ, **handoff.inherit(end)}
    subprocess.run([sys.executable, "-c", child], env=env, pass_fds=(end.fileno(),),
                   check=True, timeout=30)
    end.close()
    assert os.read(read_end, 100) == b"c0ffee"
    assert os.read(read_end, 100) == b"", "every write end went with the child"
    os.close(read_end)


def test_a_handoff_named_but_not_inherited_brings_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unused = os.open(os.devnull, os.O_RDONLY)
    os.close(unused)  # a number no fd has now
    monkeypatch.setenv(handoff.HANDOFF_ENV, str(unused))
    assert handoff.inherited() is None
    monkeypatch.setenv(handoff.HANDOFF_ENV, "not-a-number")
    assert handoff.inherited() is None
