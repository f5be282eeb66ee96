"""Handing a started sandbox to another process (agentkernel.handoff): descriptions and fds
over a real socket pair, and the environment a pool-launched kernel reads."""

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


def test_the_environment_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    description = {"container_id": "c0ffee", "ready": {"python": "3.12.1"}}
    for name, value in handoff.handoff_env(description).items():
        monkeypatch.setenv(name, value)
    assert handoff.take_handoff() == description
    assert handoff.take_handoff() is None
