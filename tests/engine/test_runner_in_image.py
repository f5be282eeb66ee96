"""The runner inside the test image's container, started with the engine's own command line
and agentkernel's IPython volume mounted: the image has no IPython, and what it brings
(matplotlib) works as on a local kernel."""

from __future__ import annotations

import base64

import pytest
from helpers.runner import Cell

from agentkernel.runner_client import BUNDLE_MOUNT, LocalProcessTransport, RunnerSession
from agentkernel.sandbox.bundle_volume import ensure_volume


@pytest.mark.engine
def test_matplotlib_figures_show_inline_in_the_container_image(engine, engine_name, test_image):
    """The test image has python3-matplotlib and no IPython: IPython comes from the volume."""
    volume = ensure_volume(engine, test_image)
    command = [engine_name, "run", "--rm", "-i", "--network", "none",
               "-v", f"{volume}:{BUNDLE_MOUNT}:ro", test_image, "python3"]
    transport = LocalProcessTransport(command, bundle=BUNDLE_MOUNT)
    with RunnerSession(transport) as container:
        ready = container.wait_ready(60)
        assert (ready["matplotlib"], ready["ipython_from"]) == (True, "agentkernel")
        code = (  # the local python3 kernel gives three figures and this result for it
            "%matplotlib inline\nimport os, matplotlib.pyplot as plt\n"
            "for n in (1, 2):\n    plt.plot([1, n])\n    plt.show()\n"
            "plt.figure()\nplt.plot([3, 1])\nos.environ['MPLBACKEND']"
        )
        cell = Cell(container, code)
        assert cell.status == "ok" and cell.text("stderr") == ""
        assert cell.result["data"]["text/plain"] == "'module://matplotlib_inline.backend_inline'"
        shown = cell.of("display")
        assert len(shown) == 3
        for display in shown:
            assert base64.b64decode(display["data"]["image/png"]).startswith(b"\x89PNG")
            assert display["data"]["text/plain"].startswith("<Figure size")
        assert Cell(container, "len(plt.get_fignums())").result["data"]["text/plain"] == "0"
