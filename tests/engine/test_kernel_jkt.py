"""jupyter_kernel_test's conformance suite against the real kernel, with IPython's samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jupyter_kernel_test
import pytest
from helpers.kernels import KERNEL_NAME, install_kernelspec

pytestmark = pytest.mark.engine


class _AgentKernelConformance(jupyter_kernel_test.KernelTests):
    """The samples; subclasses pick the engine.

    First the samples of jupyter_kernel_test's own test of the IPython kernel
    (``IPyKernelTests`` in https://github.com/jupyter/jupyter_kernel_test, test_ipykernel.py),
    which the sandbox must pass as the local ``python3`` kernel does; then a few of ours, marked.
    """

    engine = ""
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "x = 1\nValueErr", "matches": {"ValueError"}},  # ours
    ]
    complete_code_samples = [
        "1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n",
        "!ls", "%timeit -n1 -r1 pass",  # ours: IPython's own syntax
    ]
    incomplete_code_samples = [
        "print('''hello", "def f(x):\n  x*2",
        "print('hello", "for i in range(3):", "%%sh\nls",  # ours
    ]
    invalid_code_samples = ["import = 7q", "1 +* 2"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
        {"code": "'sand' + 'box'", "result": "'sandbox'"},  # ours
        {"code": "x = !echo hi\nx", "result": "['hi']"},  # ours
    ]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\frac{1}{2}'))",
         "mime": "text/latex"},
        {"code": "display({'text/markdown': '**md**'}, raw=True)", "mime": "text/markdown"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        os.environ["AGENTKERNEL_ENGINE"] = cls.engine
        os.environ.setdefault("AGENTKERNEL_IMAGE", "agentkernel-test:latest")
        install_kernelspec(Path(tempfile.mkdtemp(prefix="agentkernel-jkt-")))
        super().setUpClass()


class TestDockerConformance(_AgentKernelConformance):
    engine = "docker"


class TestPodmanConformance(_AgentKernelConformance):
    engine = "podman"
