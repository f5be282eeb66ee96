"""A real JupyterLab in a real browser, running cells in the AgentKernel Sandbox kernel.

JupyterLab serves on 127.0.0.1 (a free port, token auth) with its data, config, settings and
workspaces in a temporary directory where the kernelspec is installed. Playwright drives Debian's
Chromium (``/usr/bin/chromium``, or ``AGENTKERNEL_CHROMIUM``): no browser is downloaded, and the
page may only reach 127.0.0.1. A missing Playwright or browser fails the test; nothing is skipped.

Screenshots of every step go to ``tests/artifacts/``; the one with the executed hostname cell is
copied to ``docs/jupyterlab.png`` for the README when AGENTKERNEL_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.jupyterlab import (
    CONTAINER_GONE_TIMEOUT,
    DOCS_SCREENSHOT,
    UI_TIMEOUT,
    Lab,
    browser_page,
    launcher_card,
    output_text,
    playwright_api,
    run_in_cell,
    running_lab,
    running_run_containers,
    shoot,
    shut_down_kernel,
    wait_gone,
    wait_kernel_idle,
)
from helpers.widgets_image import WIDGETS_IMAGE

from agentkernel.engine import Engine
from agentkernel_kernel.kernelspec import DISPLAY_NAME

pytestmark = pytest.mark.engine


@pytest.fixture
def lab(engine_name: str, test_image: str, tmp_path: Path) -> Iterator[Lab]:
    with running_lab(engine_name, tmp_path) as server:
        yield server


@pytest.fixture
def widgets_lab(engine_name: str, engine: Engine, tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab whose kernels run the widgets image (ipywidgets and tqdm, no IPython)."""
    if not engine.image_present(WIDGETS_IMAGE):
        pytest.fail(f"image {WIDGETS_IMAGE} missing in {engine.kind}: run scripts/setup.sh",
                    pytrace=False)
    with running_lab(engine_name, tmp_path, {"AGENTKERNEL_IMAGE": WIDGETS_IMAGE}) as server:
        yield server


@pytest.fixture
def page(engine_name: str) -> Iterator[Any]:
    with browser_page(engine_name) as browser:
        yield browser


# -- the test -----------------------------------------------------------------------------------
def test_jupyterlab_launcher_run_interrupt_shutdown(lab: Lab, page: Any, engine_name: str,
                                                    engine: Engine) -> None:
    page.goto(lab.page_url())
    card = launcher_card(page)
    shoot(page, engine_name, "1-launcher")

    card.click()
    wait_kernel_idle(page)
    shoot(page, engine_name, "2-notebook")

    first = run_in_cell(page, 0, "import socket; print(socket.gethostname())")
    hostname = output_text(first, r"\S")
    assert hostname != socket.gethostname()
    assert re.fullmatch(r"[0-9a-f]{12}", hostname), f"hostname {hostname!r} is no container id"
    ours = [c for c in running_run_containers(engine) if c["Id"].startswith(hostname)]
    assert len(ours) == 1, f"no running container of this run has id {hostname}..."
    wait_kernel_idle(page, UI_TIMEOUT)
    shot = shoot(page, engine_name, "3-hostname")
    if os.environ.get("AGENTKERNEL_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)

    second = run_in_cell(page, 1, "import time; time.sleep(1000)")
    second.locator(".jp-InputPrompt", has_text="[*]").wait_for(state="visible")
    page.locator(".jp-StatusBar-Item", has_text=f"{DISPLAY_NAME} | Busy").wait_for(
        state="visible")
    time.sleep(1.0)  # the cell reaches the sandbox's runner and starts sleeping
    page.locator('jp-button[data-command="notebook:interrupt-kernel"]').first.click()
    assert "KeyboardInterrupt" in output_text(second, "KeyboardInterrupt")
    shoot(page, engine_name, "4-interrupted")

    wait_kernel_idle(page, UI_TIMEOUT)
    clicked = shut_down_kernel(page)
    took = wait_gone(engine, ours[0]["Id"], clicked, CONTAINER_GONE_TIMEOUT)
    shoot(page, engine_name, "5-shut-down")
    print(f"{engine_name}: container gone {took:.1f} s after Shut Down Kernel")


# -- widgets: comms both ways ------------------------------------------------------------------
def open_notebook(page: Any, lab: Lab, engine_name: str) -> None:
    """Open the Launcher, start a notebook on our kernel and wait until it is idle."""
    page.goto(lab.page_url())
    launcher_card(page).click()
    wait_kernel_idle(page)


def drag_to_the_right_end(page: Any, target: Any) -> None:
    """Drag ``target``'s slider handle past the right end of its track."""
    handle = target.locator(".noUi-handle").first
    track = target.locator(".noUi-base, .noUi-target").first
    handle.wait_for(state="visible")
    start, end = handle.bounding_box(), track.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] + 50, start["y"] + start["height"] / 2, steps=10)
    page.mouse.up()


def test_jupyterlab_widgets_and_progress_bars(widgets_lab: Lab, page: Any,
                                              engine_name: str) -> None:
    """ipywidgets in the sandbox, driven from the page: the slider's value reaches the
    sandbox's Python, and a tqdm.notebook bar draws."""
    open_notebook(page, widgets_lab, engine_name)
    first = run_in_cell(page, 0, "import ipywidgets as widgets\n"
                                 "slider = widgets.IntSlider(value=3, min=0, max=10)\nslider")
    readout = first.locator(".widget-readout")
    playwright_api().expect(readout).to_have_text("3", timeout=UI_TIMEOUT)
    drag_to_the_right_end(page, first)
    playwright_api().expect(readout).to_have_text("10", timeout=UI_TIMEOUT)
    wait_kernel_idle(page, UI_TIMEOUT)
    second = run_in_cell(page, 1, "print('sandbox sees', slider.value)")
    assert output_text(second, r"sandbox sees \d+") == "sandbox sees 10"
    shoot(page, engine_name, "6-widgets")
    third = run_in_cell(page, 2, "from tqdm.notebook import tqdm\nimport time\n"
                                 "for step in tqdm(range(20), desc='steps'):\n"
                                 "    time.sleep(0.05)")
    bar = third.locator(".widget-hprogress, .widget-progress").first
    bar.wait_for(state="visible", timeout=UI_TIMEOUT)
    playwright_api().expect(third.locator(".jp-OutputArea")).to_contain_text(
        re.compile(r"steps:\s*100%\s*20/20"), timeout=UI_TIMEOUT)  # tqdm pads with U+2007
    shoot(page, engine_name, "7-progress")
