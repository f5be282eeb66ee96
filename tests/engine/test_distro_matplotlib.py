"""Debian's own scientific stacks, as a notebook meets them: images of bookworm's and trixie's
python3-matplotlib, python3-numpy and python3-pandas (no IPython; built by scripts/setup.sh),
plotting inline through the real kernel with agentkernel's IPython.

Bookworm's matplotlib 3.6 imports ``IPython.core.pylabtools.backend2gui`` (gone in IPython 9.16)
and predates ``rcParams._get`` (matplotlib-inline 0.2): its sandboxes get IPython 8.
"""

from __future__ import annotations

import ast
import base64
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from helpers.kernels import execute, running_kernel

from agentkernel.engine import Engine

DISTRO_IMAGES = {  # suite -> (image, its matplotlib's version prefix, the IPython major it gets)
    "bookworm": ("agentkernel-scipy:bookworm", "3.6.", 8),
    "trixie": ("agentkernel-scipy:trixie", "3.10.", int(metadata.version("ipython").split(".")[0])),
}
# what %matplotlib inline makes the backend: its module's name, or "inline" from matplotlib 3.9 on
INLINE = ("'module://matplotlib_inline.backend_inline'", "'inline'")


def distro_image(engine: Engine, suite: str) -> str:
    image = DISTRO_IMAGES[suite][0]
    if not engine.image_present(image):
        pytest.fail(f"image {image} missing in {engine.kind}: run scripts/setup.sh",
                    pytrace=False)
    return image


def ok(kc, code: str):
    """Run ``code``: it must succeed with nothing on stderr, as on a local kernel."""
    run = execute(kc, code, timeout=180)
    assert run.status == "ok", (code, run.error)
    assert run.stream("stderr") == "", code
    return run


@pytest.fixture(scope="module")
def no_network_config() -> Iterator[str]:
    """A Jupyter config folder whose agentkernel config turns the sandbox's network off; kept
    out of pytest's temporary folders, which the lab policy lets sandboxes write."""
    with tempfile.TemporaryDirectory(prefix="agentkernel-config-") as folder:
        (Path(folder) / "agentkernel_config.py").write_text("c.SandboxConfig.network = False\n")
        yield folder


@pytest.mark.engine
@pytest.mark.parametrize("suite", sorted(DISTRO_IMAGES))
def test_pyplot_and_inline_figures_with_debians_matplotlib(engine: Engine, engine_name: str,
                                                           kernelspec: None,
                                                           no_network_config: str,
                                                           suite: str) -> None:
    image = distro_image(engine, suite)
    _, matplotlib_prefix, ipython_major = DISTRO_IMAGES[suite]
    env = {"AGENTKERNEL_IMAGE": image, "JUPYTER_CONFIG_DIR": no_network_config}
    with running_kernel(env=env, startup_timeout=300) as (_km, kc):
        ok(kc, "import matplotlib.pyplot as plt")
        # a notebook that renders to files first, then inline
        assert ok(kc, "plt.switch_backend('agg')\nplt.get_backend()").result == {
            "text/plain": "'agg'"}
        ok(kc, "%matplotlib inline")
        plotted = ok(kc, "plt.plot([1, 3, 2])")
        assert plotted.result["text/plain"].startswith("[<matplotlib.lines.Line2D at ")
        (figure,) = plotted.displays
        assert base64.b64decode(figure["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
        assert figure["text/plain"] == "<Figure size 640x480 with 1 Axes>"
        assert ok(kc, "plt.get_backend()").result["text/plain"] in INLINE
        versions = ok(kc, "import matplotlib, IPython\n"
                          "matplotlib.__version__, IPython.version_info[0], IPython.__file__")
        found = ast.literal_eval(versions.result["text/plain"])
        assert found[0].startswith(matplotlib_prefix), found  # the image's own matplotlib
        assert found[1] == ipython_major, found
        assert found[2].startswith("/opt/agentkernel/"), found  # agentkernel's, not the image's
        # its byte code was written when the volume was filled (read-only in the sandbox:
        # without it, every start compiles each module again)
        uncompiled = ok(kc, "import os, sys\n"
                            "sorted(m.__name__ for m in list(sys.modules.values())"
                            " if (getattr(m, '__file__', None) or '')"
                            ".startswith('/opt/agentkernel/')"
                            " and not (m.__spec__ and m.__spec__.cached"
                            " and os.path.exists(m.__spec__.cached)))[:5]")
        assert uncompiled.result["text/plain"] == "[]"
