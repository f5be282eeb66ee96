"""jupyter_kernel_test's conformance suite against the real kernel, every sample filled in."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jupyter_kernel_test
import pytest
from helpers.kernels import KERNEL_NAME, install_kernelspec

pytestmark = pytest.mark.engine


class _AgentKernelConformance(jupyter_kernel_test.KernelTests):
    """The samples; subclasses pick the engine."""

    engine = ""
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "x = 1\nValueErr", "matches": {"ValueError"}},
    ]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2", "for i in range(3):"]
    invalid_code_samples = ["import = 7q", "1 +* 2"]
    code_page_something = "print?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n * n for n in range(4)]", "result": "[0, 1, 4, 9]"},
        {"code": "'sand' + 'box'", "result": "'sandbox'"},
    ]
    code_display_data = [
        {"code": "class H:\n    def _repr_html_(self): return '<b>x</b>'\ndisplay(H())",
         "mime": "text/html"},
        {"code": "display({'text/markdown': '**md**'}, raw=True)", "mime": "text/markdown"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "print('x'); clear_output()"

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
