"""The AgentKernel Sandbox kernel: the Jupyter protocol only.

Cells go to the runner inside the sandbox through ``SandboxManager``; runner events become iopub
messages here. ``%sandbox`` commands are parsed by ``agentkernel.commands`` and carried out by
the manager. Nothing here talks to the engine directly.
"""

from __future__ import annotations

import codeop
import platform
import re
from typing import Any

from ipykernel.kernelbase import Kernel
from IPython.core.error import StdinNotImplementedError
from traitlets import Instance

from agentkernel import __version__, commands
from agentkernel.errors import SandboxError
from agentkernel.frontend import ErrorReport, outgoing_bundle
from agentkernel.manager import SandboxManager
from agentkernel_kernel.history import History

# ``name?`` / ``?name`` / ``name??``: help for a name, shown in the pager as IPython does.
HELP_REQUEST = re.compile(r"\s*(\?{0,2})([A-Za-z_][\w.]*)(\?{0,2})\s*")


class AgentKernel(Kernel):
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
        self.history = History()

    # -- kernel_info -------------------------------------------------------------------------
    @property
    def language_info(self) -> dict[str, Any]:
        self.manager.wait_background(timeout=30)
        version = self.manager.ready.get("python") or platform.python_version()
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
        if text:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _error_reply(self, report: ErrorReport, publish: bool = True) -> dict[str, Any]:
        if publish:
            self.send_response(self.iopub_socket, "error", report.content())
        return {"status": "error", "execution_count": self.execution_count, **report.content()}

    def _bundle(self, data: dict, metadata: dict | None = None) -> tuple[dict, dict]:
        """A sandbox mime bundle as the page may see it (the operator's output policy)."""
        return outgoing_bundle(data, metadata, trusted=self.manager.policy.trust_output)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "stream":
            self._out(event["name"], event["text"])
        elif kind == "display":
            data, metadata = self._bundle(event["data"], event.get("metadata"))
            content = {"data": data, "metadata": metadata,
                       "transient": event.get("transient", {})}
            msg = "update_display_data" if event.get("update") else "display_data"
            self.send_response(self.iopub_socket, msg, content)
        elif kind == "result":
            self.history.set_output(self.execution_count, event["data"].get("text/plain", ""))
            data, metadata = self._bundle(event["data"], event.get("metadata"))
            self.send_response(self.iopub_socket, "execute_result", {
                "execution_count": self.execution_count, "data": data, "metadata": metadata})
        elif kind == "clear_output":
            self.send_response(self.iopub_socket, "clear_output", {"wait": event.get("wait")})
        elif kind == "error":
            self._last_error = event
            self.send_response(self.iopub_socket, "error", ErrorReport.of_event(event).content())

    def _on_input(self, prompt: str, password: bool) -> str:
        """Ask the frontend; one that cannot answer gives the cell an EOFError."""
        try:
            return self.getpass(prompt) if password else self.raw_input(prompt)
        except StdinNotImplementedError:
            raise EOFError("this frontend does not support input()") from None

    # -- execute -----------------------------------------------------------------------------
    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict | None = None, allow_stdin: bool = False,
                         **_kwargs: Any) -> dict[str, Any]:
        self._allow_stdin = allow_stdin
        if store_history and not silent:
            self.history.add(self.execution_count, code)
        help_request = HELP_REQUEST.fullmatch(code)
        if help_request and (help_request[1] or help_request[3]):
            return self._page_help(help_request[2], detail=len(help_request[1] + help_request[3]))
        try:
            parsed = commands.parse_code(code)
            if parsed is not None:
                return self._run_commands(parsed)
            return self._run_cell(code, silent, store_history)
        except SandboxError as err:
            return self._error_reply(ErrorReport.of_ours(err))
        except Exception as err:  # a bug of ours: the request still gets its one-line reply
            self.log.exception("execute request failed")
            return self._error_reply(ErrorReport.of_internal(err))

    def _run_commands(self, parsed: list[commands.Command]) -> dict[str, Any]:
        for command in parsed:
            if isinstance(command, commands.CellCommand):
                body = f"%%sh\n{command.body}" if command.shell else command.body
                return self._run_cell(body, False, True)
            self.manager.handle(command, self._out)
        return self._ok()

    def _run_cell(self, code: str, silent: bool, store_history: bool) -> dict[str, Any]:
        self._last_error: dict[str, Any] | None = None
        done = self.manager.execute(
            code, on_event=self._on_event, on_input=self._on_input, silent=silent,
            store_history=store_history, out=self._out,
        )
        if done.get("status") == "error":
            return self._error_reply(ErrorReport.of_event(self._last_error), publish=False)
        return self._ok()

    def _ok(self, payload: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": payload or [], "user_expressions": {}}

    def _page_help(self, name: str, detail: int) -> dict[str, Any]:
        """``name?``: the runner's inspect text, as a pager payload."""
        try:
            self.manager.ensure_session(self._out)
        except SandboxError as err:
            return self._error_reply(ErrorReport.of_ours(err))
        answer = self.manager.call("inspect", name, len(name), 1 if detail > 1 else 0) or {}
        if not answer.get("found"):
            self._out("stdout", f"Object `{name}` not found.\n")
            return self._ok()
        data, _ = self._bundle(answer["data"])
        return self._ok([{"source": "page", "data": data, "start": 0}])

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

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        answer = self.manager.call("complete", code, cursor_pos) or {}
        return {"status": "ok", "matches": answer.get("matches", []),
                "cursor_start": answer.get("cursor_start", cursor_pos),
                "cursor_end": answer.get("cursor_end", cursor_pos), "metadata": {}}

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Any = ()) -> dict[str, Any]:
        answer = self.manager.call("inspect", code, cursor_pos, detail_level) or {}
        data, _ = self._bundle(answer.get("data", {}))
        return {"status": "ok", "found": bool(answer.get("found")), "data": data, "metadata": {}}

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        answer = self.manager.call("is_complete", code)
        if answer:
            return {"status": answer.get("status", "unknown"), "indent": answer.get("indent", "")}
        return _local_is_complete(code)

    async def do_history(self, hist_access_type: str, output: bool, raw: bool,
                         session: int | None = None, start: int | None = None,
                         stop: int | None = None, n: int | None = None,
                         pattern: str | None = None, unique: bool = False) -> dict[str, Any]:
        history = self.history.answer(hist_access_type, output=output, session=session,
                                      start=start or 0, stop=stop, n=n, pattern=pattern,
                                      unique=unique)
        return {"status": "ok", "history": history}

    # -- lifetime ----------------------------------------------------------------------------
    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.manager.shutdown()
        return {"status": "ok", "restart": restart}


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


def _local_is_complete(code: str) -> dict[str, Any]:
    """codeop's answer, for when no runner is up yet."""
    try:
        compiled = codeop.compile_command(code, symbol="exec")
    except (SyntaxError, ValueError, OverflowError):
        return {"status": "invalid"}
    if compiled is None:
        indent = "    " if code.rstrip().endswith(":") else ""
        return {"status": "incomplete", "indent": indent}
    return {"status": "complete"}
