"""The AgentKernel Sandbox kernel: the Jupyter protocol only.

Cells go to IPython inside the sandbox through ``SandboxManager``; runner events become iopub
messages here, and the frontend's comm messages go down to the runner's comm manager.
``%sandbox`` commands are parsed by ``agentkernel.commands`` (loaded at the first cell that may
call one: ``magic_names.may_call_ours``) and carried out by the manager.
Nothing here talks to the engine directly. Every mime bundle from the sandbox goes through
``agentkernel.frontend.outgoing_bundle`` before a frontend sees it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ipykernel import kernel_protocol_version
from IPython.core.error import StdinNotImplementedError
from traitlets import Instance

from agentkernel import __version__, magic_names
from agentkernel.errors import SandboxError
from agentkernel.frontend import (
    ErrorReport,
    StreamText,
    outgoing_bundle,
    outgoing_comm_data,
    outgoing_text,
)
from agentkernel.manager import SandboxManager
from agentkernel_kernel import history as history_requests
from agentkernel_kernel.history import History
from agentkernel_kernel.ipykernel_compat import HookedKernel

if TYPE_CHECKING:
    from agentkernel.commands import Command

COMM_TYPES = ("comm_open", "comm_msg", "comm_close")
# Seconds the kernel waits for a completion, inspection or is_complete answer before it replies
# with an empty one (the runner stops such a request after 10 s; see runner/introspection.py).
INTROSPECTION_TIMEOUT = 5.0
# Seconds a kernel_info request waits for the sandbox's Python version while the first sandbox
# starts (on a worker thread: the event loop goes on meanwhile).
LANGUAGE_INFO_WAIT = 30.0
# Seconds the process may take to exit once its shutdown reply is sent (and the iopub copy of
# it handed to the iopub thread). ipykernel 7's close can stall there (its control thread
# waits 10 s to flush through an iopub thread that is being stopped; seen in most shutdowns of
# a kernel that took a warm sandbox), and a client then kills the kernel after 2.5 s. Nothing
# is left to do by then (the reply is sent, the sandbox is in its reaper's hands).
EXIT_GRACE_S = 0.05
T = TypeVar("T")


class AgentKernel(HookedKernel):
    """Runs every cell inside a Docker or Podman sandbox."""

    implementation = "agentkernel"
    implementation_version = __version__
    language = "python"
    banner = "AgentKernel Sandbox: every cell runs inside a container"
    help_links = [{"text": "AgentKernel magics", "url": "https://pypi.org/project/agentkernel/"}]

    manager = Instance(SandboxManager, allow_none=True,
                       help="The sandbox and runner this kernel drives; the application gives "
                       "the one it started before ipykernel loaded.")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if self.manager is None:
            self.manager = getattr(self.parent, "manager", None) or SandboxManager()
        self.manager.on_orphan = self._on_orphan
        self.history = History()
        self._streams = StreamText()  # colour codes split between stream events
        self._next_count = 1
        self._comms: dict[str, tuple[str, str | None]] = {}  # comm id -> (target, model)
        for msg_type in COMM_TYPES:
            self.shell_handlers[msg_type] = self._comm_request

    # -- execution count: IPython's in the sandbox, as ipykernel takes its shell's -----------
    @property
    def execution_count(self) -> int:  # type: ignore[override]
        return self._next_count

    @execution_count.setter
    def execution_count(self, value: int) -> None:
        """kernelbase increments before each cell; the sandbox's IPython counts instead."""

    # -- kernel_info -------------------------------------------------------------------------
    @property
    def kernel_info(self) -> dict[str, Any]:
        """ipykernel's reply without "debugger" among the supported features: the cells run in
        the sandbox, where the host's debugpy cannot reach (ipykernel's own would claim it,
        and import debugpy, 0.1-0.2 s of CPU, to find out)."""
        features = ["kernel subshells"] if self.supports_subshells else []
        return {
            "protocol_version": kernel_protocol_version,
            "implementation": self.implementation,
            "implementation_version": self.implementation_version,
            "language_info": self.language_info,
            "banner": self.banner,
            "help_links": self.help_links,
            "supported_features": features,
        }

    async def kernel_info_request(self, stream: Any, ident: Any, parent: dict) -> None:
        """ipykernel's reply, once the sandbox's Python version is known (or after
        LANGUAGE_INFO_WAIT): waited for on a worker thread, not on the event loop."""
        await self._off_loop(self.manager.python_version, timeout=LANGUAGE_INFO_WAIT)
        await super().kernel_info_request(stream, ident, parent)

    @property
    def language_info(self) -> dict[str, Any]:
        """The sandbox's Python as far as it is known now (kernel_info_request waits for it
        first); this Python's version until a sandbox told."""
        version = self.manager.python_version(timeout=0) or platform.python_version()
        return {
            "name": "python",
            "version": version,
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        }

    # -- output helpers ----------------------------------------------------------------------
    def _out(self, name: str, text: str) -> None:
        """A stream message: the sandbox's output, or ours (which may quote the sandbox)."""
        text = outgoing_text(text)
        if text:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _error_reply(self, report: ErrorReport, publish: bool = True) -> dict[str, Any]:
        if publish:
            self.send_response(self.iopub_socket, "error", report.content())
        return {"status": "error", "execution_count": self._reply_count(), **report.content()}

    def _reply_count(self) -> int:
        return max(0, self._next_count - 1)

    def _bundle(self, data: dict, metadata: dict | None = None) -> tuple[dict, dict]:
        """A sandbox mime bundle as the page may see it (the operator's output policy)."""
        return outgoing_bundle(data, metadata, trusted=self.manager.policy.trust_output)

    def _on_event(self, event: dict[str, Any]) -> None:
        """Send one runner event to the frontend, as an iopub message."""
        kind = event.get("type")
        if kind == "stream":
            self._out(event["name"], self._streams.feed(event["name"], event["text"]))
        elif kind == "display":
            data, metadata = self._bundle(event["data"], event.get("metadata"))
            content = {"data": data, "metadata": metadata,
                       "transient": _transient(event.get("transient"))}
            msg = "update_display_data" if event.get("update") else "display_data"
            self.send_response(self.iopub_socket, msg, content)
        elif kind == "result":
            count = event.get("execution_count")
            count = count if isinstance(count, int) else self._reply_count()
            self.history.set_output(count, event["data"].get("text/plain", ""))
            data, metadata = self._bundle(event["data"], event.get("metadata"))
            self.send_response(self.iopub_socket, "execute_result", {
                "execution_count": count, "data": data, "metadata": metadata})
        elif kind == "clear_output":
            self.send_response(self.iopub_socket, "clear_output",
                               {"wait": event.get("wait") is True})
        elif kind == "error":
            self.send_response(self.iopub_socket, "error", ErrorReport.of_event(event).content())
        elif kind in COMM_TYPES:
            self._send_comm(event)

    def _send_comm(self, event: dict[str, Any]) -> None:
        """A comm message from the sandbox, on iopub with its binary buffers; what a widget
        would render as HTML goes through the output policy."""
        comm_id, data = event["comm_id"], event.get("data", {})
        if event["type"] == "comm_open":
            state = data.get("state") if isinstance(data.get("state"), dict) else {}
            self._comms[comm_id] = (event["target_name"], state.get("_model_name"))
        target, model = self._comms.get(comm_id, (None, None))
        if event["type"] == "comm_close":
            self._comms.pop(comm_id, None)
        if isinstance(data, dict):
            data = outgoing_comm_data(target, model, data, self.manager.policy.trust_output)
        content = {"comm_id": comm_id, "data": data}
        if event["type"] == "comm_open":
            content["target_name"] = event["target_name"]
            if "target_module" in event:  # as the comm sent it (comm's own comms always do)
                module = event["target_module"]
                content["target_module"] = module if isinstance(module, str) else None
        buffers = [base64.b64decode(b) for b in event.get("buffers", [])]
        self.send_response(self.iopub_socket, event["type"], content, buffers=buffers or None,
                           metadata=event.get("metadata") or {})

    def _on_orphan(self, event: dict[str, Any]) -> None:
        """Output of a sandbox thread between requests: sent with the last request as its
        parent, as ipykernel sends a background thread's output."""
        try:
            self._on_event(event)
        except Exception:  # a reader thread must survive a bad frame
            self.log.exception("could not forward background output from the sandbox")

    def _on_input(self, prompt: str, password: bool) -> str:
        """Ask the frontend; one that cannot answer gives the cell an EOFError."""
        try:
            return self.getpass(prompt) if password else self.raw_input(prompt)
        except StdinNotImplementedError:
            raise EOFError("this frontend does not support input()") from None

    def _parent(self) -> dict[str, Any]:
        """The request being handled, for the sandbox's get_parent(), as ipykernel gives it:
        header (its values as text), parent_header, metadata and content (libraries read
        ``get_parent()["content"]["code"]``); what JSON cannot hold becomes text."""
        parent = self.get_parent("shell")
        header = parent.get("header") or {}
        message = {key: parent.get(key) or {} for key in ("parent_header", "metadata", "content")}
        # the cell's code travels once, as the request's own (the runner puts it back)
        message["content"] = {k: v for k, v in message["content"].items() if k != "code"}
        message = json.loads(json.dumps(message, default=str))
        return {"header": {key: str(value) for key, value in header.items()}, **message,
                "msg_id": str(header.get("msg_id", "")),
                "msg_type": str(header.get("msg_type", "")), "buffers": []}

    # -- execute -----------------------------------------------------------------------------
    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict | None = None, allow_stdin: bool = False,
                         **_kwargs: Any) -> dict[str, Any]:
        self.allow_stdin = allow_stdin
        if store_history and not silent:
            self.history.add(self._next_count, code)
        try:
            parsed = None
            if magic_names.may_call_ours(code):
                from agentkernel import commands

                parsed = commands.parse_code(code)
            if parsed is not None:
                return self._run_commands(parsed)
            return self._run_cell(code, silent, store_history, user_expressions, allow_stdin)
        except SandboxError as err:
            return self._error_reply(ErrorReport.of_ours(err))
        except Exception as err:  # a bug of ours: the request still gets its one-line reply
            self.log.exception("execute request failed")
            return self._error_reply(ErrorReport.of_internal(err))

    def _run_commands(self, parsed: list[Command]) -> dict[str, Any]:
        from agentkernel import command_handlers, commands

        # the commands that replace the runner, and with it IPython's execution count
        new_runner = (commands.StartCommand, commands.RestartCommand, commands.ConnectCommand)
        for command in parsed:
            if isinstance(command, commands.CellCommand):
                body = f"%%sh\n{command.body}" if command.shell else command.body
                return self._run_cell(body, False, True, None, self.allow_stdin)
            command_handlers.handle(self.manager, command, self._out)
            if isinstance(command, new_runner):
                self._next_count = 1
        return self._ok()

    def _run_cell(self, code: str, silent: bool, store_history: bool,
                  user_expressions: dict | None, allow_stdin: bool) -> dict[str, Any]:
        done = self.manager.execute(
            code, on_event=self._on_event, on_input=self._on_input if allow_stdin else None,
            silent=silent, store_history=store_history, user_expressions=user_expressions,
            parent=self._parent(), out=self._out,
        )
        self._streams.end()
        count = done.get("execution_count")
        if isinstance(count, int):
            self._next_count = count + 1
        payload = [self._outgoing_payload(p) for p in done.get("payload") or []]
        if any(p.get("source") == "ask_exit" and not p.get("keepkernel") for p in payload):
            self.io_loop.call_later(0.1, self.io_loop.stop)  # ``exit``: as ipykernel, end
        if done.get("status") == "error":
            reply = self._error_reply(ErrorReport.of_event(done), publish=False)
            return {**reply, "payload": payload, "user_expressions": {}}
        expressions = {name: self._outgoing_expression(value) for name, value in
                       (done.get("user_expressions") or {}).items()}
        return self._ok(payload, expressions)

    def _ok(self, payload: list[dict[str, Any]] | None = None,
            user_expressions: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"status": "ok", "execution_count": self._reply_count(),
                "payload": payload or [], "user_expressions": user_expressions or {}}

    # -- comms -------------------------------------------------------------------------------
    def _comm_request(self, stream: Any, ident: Any, msg: dict[str, Any]) -> None:
        """A frontend's comm_open/comm_msg/comm_close, handed to the sandbox's comms."""
        content = msg.get("content") or {}
        fields = {
            "comm_id": str(content.get("comm_id", "")),
            "data": content.get("data") or {},
            "metadata": msg.get("metadata") or {},
            "buffers": [base64.b64encode(bytes(b)).decode("ascii")
                        for b in msg.get("buffers") or []],
        }
        if msg["header"]["msg_type"] == "comm_open":
            fields["target_name"] = str(content.get("target_name", ""))
            if content.get("target_module") is not None:
                fields["target_module"] = content["target_module"]
        try:
            self.manager.comm(msg["header"]["msg_type"], fields, on_event=self._on_event,
                              parent=self._parent())
        except SandboxError as err:  # no sandbox: the comm has no peer, as with no target
            self.log.warning("comm message not delivered: %s", err)

    async def comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """The sandbox's open comms."""
        target = (parent.get("content") or {}).get("target_name")
        comms = await self._off_loop(self.manager.call, "comm_info", target,
                                     timeout=INTROSPECTION_TIMEOUT) or {}
        self.session.send(stream, "comm_info_reply", {"comms": comms, "status": "ok"},
                          parent, ident)

    # -- introspection -----------------------------------------------------------------------
    async def complete_request(self, stream: Any, ident: Any, parent: dict) -> None:
        await self._checked_request(super().complete_request, "complete_reply", stream, ident,
                                    parent, cursor=True)

    async def inspect_request(self, stream: Any, ident: Any, parent: dict) -> None:
        await self._checked_request(super().inspect_request, "inspect_reply", stream, ident,
                                    parent, cursor=True)

    async def is_complete_request(self, stream: Any, ident: Any, parent: dict) -> None:
        await self._checked_request(super().is_complete_request, "is_complete_reply", stream,
                                    ident, parent, cursor=False)

    async def _checked_request(self, handle: Any, reply_type: str, stream: Any, ident: Any,
                               parent: dict, cursor: bool) -> None:
        """Answer a request whose content is malformed (or whose handling fails) with an error
        reply naming the problem, instead of the silence ipykernel would leave."""
        content = parent.get("content")
        problem = request_problem(content if isinstance(content, dict) else None, cursor)
        if problem is None:
            try:
                await handle(stream, ident, parent)
                return
            except Exception as err:  # a bug of ours: the client still gets its reply
                self.log.exception("%s failed", reply_type)
                problem = ErrorReport.of_internal(err).evalue
        if problem is not None:
            self.session.send(stream, reply_type, {"status": "error", "ename": "ValueError",
                                                    "evalue": problem, "traceback": []},
                              parent, ident)

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        answer = await self._off_loop(self.manager.call, "complete", code, cursor_pos,
                                      timeout=INTROSPECTION_TIMEOUT) or {}
        return {"status": "ok", "matches": answer.get("matches", []),
                "cursor_start": answer.get("cursor_start", cursor_pos),
                "cursor_end": answer.get("cursor_end", cursor_pos),
                "metadata": answer.get("metadata", {})}

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Any = ()) -> dict[str, Any]:
        answer = await self._off_loop(self.manager.call, "inspect", code, cursor_pos,
                                      detail_level, timeout=INTROSPECTION_TIMEOUT) or {}
        data, metadata = self._bundle(answer.get("data", {}), answer.get("metadata"))
        return {"status": "ok", "found": bool(answer.get("found")), "data": data,
                "metadata": metadata}

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        return await self._off_loop(self.manager.call, "is_complete", code,
                                    timeout=INTROSPECTION_TIMEOUT) or {"status": "unknown"}

    async def _off_loop(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` (a wait on the sandbox) on a worker thread, so the event
        loop goes on meanwhile. An interrupt (SIGINT) that arrives meanwhile goes into the
        sandbox, which stops a completion or inspection there, so the request still gets its
        (empty) reply; ipykernel's own handler would raise KeyboardInterrupt into the event
        loop and leave it without one."""
        with interrupts_forwarded(self.manager.interrupt):
            return await asyncio.to_thread(call, *args, **kwargs)

    async def history_request(self, stream: Any, ident: Any, parent: dict) -> None:
        """Answer every history_request: one whose fields have the wrong types gets an error
        naming the field (ipykernel's handler would raise and leave it without a reply)."""
        content = parent.get("content")
        problem = history_requests.request_problem(content)
        if problem is None:
            try:
                reply = await self.do_history(**history_requests.request_fields(content))
            except Exception as err:  # a bug of ours: the client still gets its reply
                self.log.exception("history_reply failed")
                problem = ErrorReport.of_internal(err).evalue
        if problem is not None:
            reply = {"status": "error", "ename": "ValueError", "evalue": problem,
                     "traceback": []}
        self.session.send(stream, "history_reply", reply, parent, ident)

    async def do_history(self, hist_access_type: str, output: bool, raw: bool,
                         session: int | None = None, start: int | None = None,
                         stop: int | None = None, n: int | None = None,
                         pattern: str | None = None, unique: bool = False) -> dict[str, Any]:
        history = self.history.answer(hist_access_type, output=output, session=session,
                                      start=start or 0, stop=stop, n=n, pattern=pattern,
                                      unique=unique)
        return {"status": "ok", "history": history}

    def _outgoing_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A payload of the sandbox's reply; a pager's mime bundle goes through the output
        policy."""
        if payload.get("source") == "page" and isinstance(payload.get("data"), dict):
            data, _ = self._bundle(payload["data"])
            return {**payload, "data": data}
        return dict(payload)

    def _outgoing_expression(self, value: Any) -> Any:
        """A user_expressions result; its mime bundle goes through the output policy."""
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else None
            data, metadata = self._bundle(value["data"], metadata)
            return {**value, "data": data, "metadata": metadata}
        return value

    # -- lifetime ----------------------------------------------------------------------------
    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        # a restart waits for the removal: a named sandbox's name is then free again
        # a restart keeps the workspace: the files cells wrote are there after it, as on a
        # local kernel
        self.manager.shutdown(at_once=not restart, keep_workspace=restart)
        return {"status": "ok", "restart": restart}

    async def after_shutdown(self) -> None:
        """After ipykernel's last step after the shutdown reply: a bounded exit (EXIT_GRACE_S)."""
        exit_soon = threading.Timer(EXIT_GRACE_S, os._exit, (0,))
        exit_soon.daemon = True
        exit_soon.start()


@contextmanager
def interrupts_forwarded(forward: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGINT calls ``forward()`` instead of raising KeyboardInterrupt. Only on
    the main thread, the one Python runs signal handlers on (ipykernel's control thread answers
    kernel_info too, and a SIGINT never interrupts it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: forward())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _transient(transient: dict | None) -> dict[str, str]:
    """A display's transient fields as the frontend gets them: its display_id (a string), the
    one transient field of the protocol, and nothing else a sandbox puts there."""
    display_id = (transient or {}).get("display_id")
    return {"display_id": display_id} if isinstance(display_id, str) else {}


def request_problem(content: dict | None, cursor: bool) -> str | None:
    """What is wrong with a complete/inspect/is_complete request's content, or None.

    ``code`` must be a string; ``cursor_pos`` (when asked) an integer from 0 to the length of
    the code, or null (the end of the code, as ipykernel takes it)."""
    if content is None or not isinstance(content.get("code"), str):
        return "the request needs 'code', a string"
    if not cursor:
        return None
    if "cursor_pos" not in content:
        return "the request needs 'cursor_pos'"
    position = content["cursor_pos"]
    if position is None:
        content["cursor_pos"] = len(content["code"])
        return None
    if isinstance(position, bool) or not isinstance(position, int) or not (
            0 <= position <= len(content["code"])):
        return (f"invalid cursor_pos {str(position)[:40]!r}: expected an integer from 0 to "
                f"{len(content['code'])} (the length of the code), or null")
    return None
