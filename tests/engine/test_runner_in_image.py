"""The runner inside the test image's container, started with the engine's own command line:
what the image brings (matplotlib) works without the kernel around it."""

from __future__ import annotations

import base64

import pytest
from helpers.runner import Cell

from agentkernel.runner_client import LocalProcessTransport, RunnerSession


@pytest.mark.engine
def test_matplotlib_figures_show_inline_in_the_container_image(engine_name, test_image):
    """In the test image (python3-matplotlib), figures come back as PNG displays."""
    command = [engine_name, "run", "--rm", "-i", test_image, "python3"]
    transport = LocalProcessTransport(command)
    with RunnerSession(transport) as container:
        assert container.wait_ready(60)["matplotlib"] is True
        code = (
            "import os, matplotlib.pyplot as plt\n"
            "for n in (1, 2):\n    plt.plot([1, n])\n    plt.show()\n"
            "plt.figure()\nplt.plot([3, 1])\nos.environ['MPLBACKEND']"
        )
        cell = Cell(container, code)
        assert cell.status == "ok" and cell.text("stderr") == ""
        assert cell.result["data"]["text/plain"] == "'Agg'"
        shown = cell.of("display")
        assert len(shown) == 3
        for display in shown:
            assert base64.b64decode(display["data"]["image/png"]).startswith(b"\x89PNG")
            assert display["data"]["text/plain"].startswith("<Figure size")
        assert Cell(container, "len(plt.get_fignums())").result["data"]["text/plain"] == "0"
