"""Hostile output in a real JupyterLab page: it cannot act as the user, and charts still draw.

A cell in the AgentKernel Sandbox kernel (default policy) displays every kind of output that
runs script in JupyterLab's trusted session (``application/javascript``, HTML with a script, an
``onerror`` handler, an SVG ``onload``, Markdown with raw HTML, an ``execute_result``), each
trying to set a canary on the page, read the Jupyter token and cookie, and create a terminal
and a kernel through the server's REST API. None may succeed: the canaries stay unset, the
server has no terminal and no other kernel. A chart made of HTML + JavaScript (a canvas filled
by an inline script) still draws, inside its isolated frame: its pixels are checked.
"""

from __future__ import annotations

import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.jupyterlab import (
    Lab,
    browser_page,
    launcher_card,
    run_in_cell,
    running_lab,
    shoot,
    wait_kernel_idle,
)
from helpers.policies import DEFAULT

pytestmark = pytest.mark.engine

CANARIES = ["pwned_js", "pwned_script", "pwned_img", "pwned_svg", "pwned_md", "pwned_result",
            "stolen"]
STEAL = ("try {{ window.stolen = document.cookie + localStorage.length + "
         "parent.document.body.innerHTML }} catch (e) {{}};"
         "var x = (document.cookie.match(/_xsrf=([^;]*)/) || [])[1] || '';"
         "['{url}/api/terminals', '{url}/api/kernels'].forEach(function (u) {{"
         "fetch(u, {{method: 'POST', credentials: 'include', headers: {{'X-XSRFToken': x}}}})"
         ".catch(function () {{}}) }});")
HOSTILE_CELL = '''
STEAL = {steal!r}
class Js:
    def _repr_javascript_(self): return "window.pwned_js = 1;" + STEAL
class Script:
    def _repr_html_(self): return "<script>window.pwned_script = 1;" + STEAL + "</script>ok"
class Img:
    def _repr_html_(self): return '<img src="x" onerror="window.pwned_img = 1">'
class Svg:
    def _repr_svg_(self):
        return ('<svg xmlns="http://www.w3.org/2000/svg" onload="window.pwned_svg = 1">'
                '<rect width="10" height="10"/></svg>')
class Md:
    def _repr_markdown_(self): return 'md <img src="x" onerror="window.pwned_md = 1">'
class Result:
    def _repr_html_(self): return '<img src="y" onerror="window.pwned_result = 1">result'
for obj in (Js(), Script(), Img(), Svg(), Md()):
    display(obj)
'''
CHART_CELL = '''
class Chart:
    def _repr_html_(self):
        return ('<canvas id="c" width="200" height="100"></canvas><script>'
                'var g = document.getElementById("c").getContext("2d");'
                'g.fillStyle = "rgb(255, 0, 0)"; g.fillRect(10, 10, 180, 80);</script>')
'''


@pytest.fixture
def lab(engine_name: str, test_image: str, kernelspec: None, tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab whose kernels run under the default policy."""
    with running_lab(engine_name, tmp_path, env_extra=DEFAULT) as server:
        yield server


@pytest.fixture
def page(engine_name: str) -> Iterator[Any]:
    with browser_page(engine_name) as browser:
        yield browser


def api(lab: Lab, path: str) -> Any:
    with urllib.request.urlopen(lab.page_url(f"api/{path}"), timeout=10) as response:
        return json.load(response)


def red_pixels(png: bytes) -> int:
    """How many pixels of a screenshot are (nearly) pure red."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(1 for r, g, b in image.getdata() if r > 200 and g < 60 and b < 60)


def test_hostile_output_cannot_act_as_the_user(lab: Lab, page: Any, engine_name: str) -> None:
    page.goto(lab.page_url())
    launcher_card(page).click()
    wait_kernel_idle(page)
    code = HOSTILE_CELL.format(steal=STEAL.format(url=lab.url))
    hostile = run_in_cell(page, 0, f"exec({code!r}); Result()")  # one line: typed as is
    hostile.locator(".jp-OutputArea-executeResult").wait_for(state="visible")
    wait_kernel_idle(page)
    page.wait_for_timeout(3000)  # time for any script, handler or request to run
    hostile.locator(".jp-OutputArea").scroll_into_view_if_needed()
    shoot(page, engine_name, "hostile-output")
    seen = page.evaluate(f"() => {json.dumps(CANARIES)}.map(name => window[name])")
    assert seen == [None] * len(CANARIES), dict(zip(CANARIES, seen, strict=True))
    frames = page.locator(".jp-OutputArea-output iframe")
    assert frames.count() >= 2, "the outputs that need scripts run in isolated frames"
    for index in range(frames.count()):
        sandbox = frames.nth(index).get_attribute("sandbox")
        assert sandbox == "allow-scripts", sandbox
    assert api(lab, "terminals") == []
    assert len(api(lab, "kernels")) == 1, "no kernel was created by the outputs"

    chart = run_in_cell(page, 1, f"exec({CHART_CELL!r}); Chart()")
    frame = chart.locator(".jp-OutputArea-output iframe")
    frame.wait_for(state="visible")
    page.wait_for_timeout(1500)
    shot = frame.screenshot()
    (Path(__file__).resolve().parents[1] / "artifacts" / f"chart-{engine_name}.png").write_bytes(
        shot)
    assert red_pixels(shot) > 5000, "the chart's script drew its canvas inside the frame"
