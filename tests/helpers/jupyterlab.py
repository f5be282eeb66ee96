"""A real JupyterLab and a real browser for tests: the server on 127.0.0.1 with its state in a
temporary folder, and Debian's Chromium driven by Playwright, kept to 127.0.0.1.

A missing Playwright or browser fails the test; nothing is skipped. Screenshots go to
``tests/artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from agentkernel.engine import Engine
from agentkernel_kernel.kernelspec import DISPLAY_NAME, KERNEL_NAME, install
from helpers.engines import RUN_ID, RUN_LABEL

ROOT = Path(__file__).resolve().parents[2]  # the repository
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "jupyterlab.png"
CHROMIUM = os.environ.get("AGENTKERNEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LAB_START_TIMEOUT = 180.0
KERNEL_READY_TIMEOUT = 180_000  # ms: the kernel starts its sandbox before it answers
UI_TIMEOUT = 60_000  # ms, for anything the page itself does
CONTAINER_GONE_TIMEOUT = 15.0
QUIET_LAB_SETTINGS = {
    # no news, no update checks: the page makes no request beyond 127.0.0.1
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


# -- the server -----------------------------------------------------------------------------------
@dataclass
class Lab:
    """A running JupyterLab server."""

    process: subprocess.Popen
    url: str
    token: str
    log: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}/{path}?token={self.token}"


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_home(base: Path, jupyter_path: Path) -> tuple[dict[str, str], list[str]]:
    """Environment and options that keep JupyterLab's state under ``base``, quiet and local."""
    dirs = {name: base / name for name in
            ("data", "config", "runtime", "settings", "workspaces", "notebooks")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for relative, values in QUIET_LAB_SETTINGS.items():
        target = dirs["settings"] / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values), encoding="utf-8")
    env = {
        **os.environ,
        "JUPYTER_PATH": os.pathsep.join(
            [str(jupyter_path)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(
                os.pathsep) if p]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
    }
    options = [
        f"--ServerApp.root_dir={dirs['notebooks']}",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # CI containers often run as root
        options.append("--ServerApp.allow_root=True")
    return env, options


def wait_for_lab(lab: Lab, timeout: float = LAB_START_TIMEOUT) -> None:
    """Return when the server answers /api/status; fail with its log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(lab.page_url("api/status"), timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    code = lab.process.poll()
    why = f"exited with code {code}" if code is not None else f"no answer in {timeout:.0f} s"
    log_tail = lab.log.read_text(errors="replace")[-3000:]
    pytest.fail(f"JupyterLab did not come up ({why}); log:\n{log_tail}", pytrace=False)


def stop_lab(lab: Lab) -> None:
    """Stop the server (it shuts its kernels down), killing it if it lingers."""
    if lab.process.poll() is None:
        lab.process.terminate()
        try:
            lab.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.process.kill()
            lab.process.wait(timeout=10)


@contextlib.contextmanager
def running_lab(engine_name: str, tmp_path: Path,
                env_extra: dict[str, str] | None = None,
                options_extra: Sequence[str] = ()) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with the AgentKernel Sandbox kernelspec installed; its kernels
    get ``env_extra`` on top of this process's environment; ``options_extra`` go to the
    server (``--gateway-url=...``: its kernels are a gateway's).

    Its state (kernelspec, Jupyter config) goes to a folder of its own, not ``tmp_path``: the
    lab policy makes pytest's folders writable in sandboxes, and no policy lets a sandbox write
    where a kernelspec or a Jupyter config is, so later tests could not use pytest's folders."""
    with tempfile.TemporaryDirectory(prefix="agentkernel-lab-") as home:
        yield from _running_lab(engine_name, Path(home), env_extra, options_extra)


def _running_lab(engine_name: str, tmp_path: Path, env_extra: dict[str, str] | None,
                 options_extra: Sequence[str]) -> Iterator[Lab]:
    prefix = tmp_path / "prefix"
    install(prefix=str(prefix))  # on the server's JUPYTER_PATH only, not this process's
    env, options = lab_home(tmp_path / "lab", prefix / "share" / "jupyter")
    env.update(env_extra or {})
    port, token = free_port(), secrets.token_hex(16)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"jupyterlab-{engine_name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", *options,
             *options_extra],
            env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    server = Lab(process, f"http://127.0.0.1:{port}", token, log)
    try:
        wait_for_lab(server)
        yield server
    finally:
        stop_lab(server)


# -- the browser ----------------------------------------------------------------------------------
def playwright_api() -> ModuleType:
    """playwright.sync_api, or a failure naming how to install it."""
    try:
        from playwright import sync_api
    except ImportError as err:
        pytest.fail(f"playwright is not installed ({err}): pip install -e '.[test]'",
                    pytrace=False)
    return sync_api


def chromium_path() -> str:
    """The Chromium binary to drive, or a failure naming how to install it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/setup.sh "
                    "does), or set AGENTKERNEL_CHROMIUM", pytrace=False)
    return CHROMIUM


def local_only(blocked: list[str]) -> Callable[[Any], None]:
    """A route handler that lets requests to 127.0.0.1 through and aborts any other."""

    def handle(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    return handle


@contextlib.contextmanager
def browser_page(engine_name: str) -> Iterator[Any]:
    """A Chromium page (1100x600) whose requests stay on 127.0.0.1."""
    sync_api = playwright_api()
    executable = chromium_path()
    blocked: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True)
        context = browser.new_context(viewport={"width": 1100, "height": 600})
        context.route("**/*", local_only(blocked))
        context.set_default_timeout(UI_TIMEOUT)
        page = context.new_page()
        try:
            yield page
        finally:
            with contextlib.suppress(Exception):  # a failed screenshot must not hide the error
                shoot(page, engine_name, "final")
            context.close()
            browser.close()
    if blocked:
        print(f"blocked requests beyond 127.0.0.1: {blocked}")


# -- steps --------------------------------------------------------------------------------------
def shoot(page: Any, engine_name: str, step: str) -> Path:
    """Save a screenshot of the page as tests/artifacts/jupyterlab-<engine>-<step>.png."""
    path = ARTIFACTS / f"jupyterlab-{engine_name}-{step}.png"
    page.screenshot(path=str(path))
    return path


def launcher_card(page: Any) -> Any:
    """The Launcher's notebook card of our kernel, checked to show the kernelspec's logo."""
    card = page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{DISPLAY_NAME}"]')
    card.wait_for(state="visible")
    logo = card.locator("img")
    src = logo.get_attribute("src") or ""
    assert f"kernelspecs/{KERNEL_NAME}/logo" in src, f"launcher card logo src is {src!r}"
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=logo.element_handle())
    return card


def wait_kernel_idle(page: Any, timeout: float = KERNEL_READY_TIMEOUT) -> None:
    """Wait until the status bar shows our kernel connected and idle (its sandbox is up)."""
    status = page.locator(".jp-StatusBar-Item", has_text=f"{DISPLAY_NAME} | Idle")
    status.wait_for(state="visible", timeout=timeout)


def cell(page: Any, index: int) -> Any:
    """The index-th code cell of the visible notebook."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)


def run_in_cell(page: Any, index: int, code: str) -> Any:
    """Type ``code`` into cell ``index`` and run it with Shift+Enter; returns the cell."""
    target = cell(page, index)
    editor = target.locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.wait_for_function("e => e.contains(document.activeElement)",
                           arg=editor.element_handle())
    page.keyboard.insert_text(code)
    assert editor.inner_text().strip() == code, editor.inner_text()
    page.keyboard.press("Shift+Enter")
    return target


def output_text(target: Any, pattern: str, timeout: float = UI_TIMEOUT) -> str:
    """The cell's output text once it matches ``pattern``."""
    output = target.locator(".jp-OutputArea-output").first
    output.wait_for(state="visible", timeout=timeout)
    expect = playwright_api().expect
    expect(target.locator(".jp-OutputArea")).to_contain_text(re.compile(pattern),
                                                             timeout=timeout)
    return target.locator(".jp-OutputArea").inner_text().strip()


def click_menu(page: Any, menu: str, item: str) -> None:
    """Open the main menu ``menu`` and click its item ``item``."""
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    page.locator(".lm-Menu-item", has_text=item).first.click()


def shut_down_kernel(page: Any) -> float:
    """Kernel > Shut Down Kernel, accepting a confirmation if one is asked; returns the click's
    monotonic time."""
    clicked = time.monotonic()
    click_menu(page, "Kernel", "Shut Down Kernel")
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    no_kernel = page.locator(".jp-StatusBar-Item", has_text="No Kernel")
    accept.or_(no_kernel).first.wait_for(state="visible")
    if accept.is_visible():
        accept.click()
    no_kernel.wait_for(state="visible")
    return clicked


def running_run_containers(engine: Engine) -> list[dict]:
    """Running containers made during this test run."""
    return engine.api.containers(filters={"label": f"{RUN_LABEL}={RUN_ID}"})


def wait_gone(engine: Engine, container_id: str, since: float, timeout: float) -> float:
    """Seconds from ``since`` until ``container_id`` no longer runs; fails after ``timeout``."""
    while time.monotonic() - since < timeout:
        if all(c["Id"] != container_id for c in running_run_containers(engine)):
            return time.monotonic() - since
        time.sleep(0.25)
    pytest.fail(f"container {container_id[:12]} still running {timeout:.0f} s after the "
                "kernel was shut down", pytrace=False)


