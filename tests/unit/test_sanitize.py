"""Sandbox output as the page may see it: hostile markup neutralised, real outputs kept.

The hostile samples are classic XSS vectors (OWASP's filter-evasion cheat sheet shapes) in
every mime type a notebook output can carry; the real ones are what pandas and matplotlib
produce (generated here with the host's pandas and matplotlib, the same versions as the test
image's).
"""

from __future__ import annotations

import collections
import io
import re
import xml.dom.minidom

import pytest
from helpers.outputs import framed_source, inert, safe_to_show

from agentkernel.frontend import outgoing_bundle
from agentkernel.sanitize import clean_html, markdown_is_inert, safe_bundle

HOSTILE_HTML = [
    "<script>window.pwned=1</script>",
    "<img src=x onerror=\"window.pwned=1\">",
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    "<svg onload=\"window.pwned=1\"><rect/></svg>",
    "<a href=\"javascript:window.pwned=1\">click</a>",
    "<iframe src=\"javascript:parent.pwned=1\"></iframe>",
    "<body onload=window.pwned=1>",
    "<div style=\"x\" onmouseover=\"window.pwned=1\">hover</div>",
    "<object data=\"data:text/html,<script>parent.pwned=1</script>\"></object>",
    "<form action=\"/api/terminals\" method=\"post\"><button>go</button></form>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.pwned=1></style>",
    "<svg><use href=\"data:image/svg+xml,<svg id='x' onload='window.pwned=1'/>#x\"/></svg>",
]


@pytest.mark.parametrize("markup", HOSTILE_HTML)
def test_hostile_html_is_sanitised_or_isolated(markup):
    data, _ = safe_bundle({"text/html": markup, "text/plain": "x"}, {})
    shown = data["text/html"]
    assert safe_to_show(shown), shown
    if shown.startswith("<iframe"):
        assert framed_source(shown) == markup, "the original runs, inside the frame only"
    assert inert(clean_html(markup))


def test_javascript_runs_only_in_a_frame():
    data, _ = safe_bundle({"application/javascript": "window.pwned = 1",
                           "text/plain": "<IPython.core.display.Javascript object>"}, {})
    assert "application/javascript" not in data
    assert data["text/html"].startswith('<iframe sandbox="allow-scripts" srcdoc="&lt;script&gt;')


@pytest.mark.parametrize("markdown", [
    "**bold** and [a link](https://jupyter.org) and ![img](data:image/png;base64,AAAA)",
    "# Title\n\n> quote\n\n| a | b |\n|---|---|\n| 1 < 2 | x |\n\n$x^2$",
])
def test_inert_markdown_is_kept_as_is(markdown):
    assert markdown_is_inert(markdown)
    assert safe_bundle({"text/markdown": markdown}, {})[0] == {"text/markdown": markdown}


@pytest.mark.parametrize("markdown", [
    "hello <img src=x onerror=window.pwned=1>",
    "[click](javascript:window.pwned=1)",
    "[click][ref]\n\n[ref]: javascript:window.pwned=1",
    "<script>window.pwned=1</script>",
    "$\\href{javascript:window.pwned=1}{click}$",
])
def test_markdown_with_raw_html_or_script_links_becomes_sanitised_html(markdown):
    assert not markdown_is_inert(markdown)
    data, _ = safe_bundle({"text/markdown": markdown, "text/plain": "md"}, {})
    assert "text/markdown" not in data and inert(data["text/html"])
    assert "\\href" not in data["text/html"]


def test_latex_links_to_scripts_are_removed():
    data, _ = safe_bundle({"text/latex": "$\\href{javascript:alert(1)}{x} \\href{https://a.b}{y}$"},
                          {})
    assert data["text/latex"] == "${javascript:alert(1)}{x} \\href{https://a.b}{y}$"


def test_unknown_mime_types_are_dropped():
    data, meta = safe_bundle({"application/vnd.bokehjs_exec.v0+json": {"x": 1},
                              "application/pdf": "JVBERi0", "text/plain": "chart"},
                             {"application/pdf": {"a": 1}, "isolated": True})
    assert data == {"text/plain": "chart"} and meta == {"isolated": True}


def test_a_pandas_table_keeps_its_table_and_style():
    import pandas

    frame = pandas.DataFrame({"a": [1, 2], "b": ["x", "<y>"]})
    original = frame._repr_html_()
    shown = safe_bundle({"text/html": original}, {})[0]["text/html"]
    assert not shown.startswith("<iframe") and inert(shown)
    for kept in ('<table border="1" class="dataframe">', "<thead>", "<th>a</th>",
                 "<td>&lt;y&gt;</td>", "<style scoped"):
        assert kept in shown, kept
    styled = frame.style.highlight_max(color="red").to_html()
    shown = safe_bundle({"text/html": styled}, {})[0]["text/html"]
    assert "background-color: red" in shown and re.search(r'<td id="T_\w+_row1_col0"', shown)


def test_a_matplotlib_svg_stays_a_valid_drawing():
    from matplotlib.figure import Figure  # not pyplot: with an IPython shell in this process
    # (the extension's tests) matplotlib 3.6's pyplot imports what IPython 9 no longer has

    figure = Figure(figsize=(2, 1.5))
    axes = figure.subplots()
    axes.plot([1, 3, 2], "o-")
    axes.set_title("t")
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    original = buffer.getvalue()
    shown = safe_bundle({"image/svg+xml": original}, {})[0]["image/svg+xml"]
    def elements(svg: str) -> collections.Counter:
        document = xml.dom.minidom.parseString(svg)  # a standalone SVG document
        return collections.Counter(node.tagName for node in document.getElementsByTagName("*"))

    kept = elements(shown)
    drawn = {tag: n for tag, n in elements(original).items() if not tag.startswith(("rdf:",
             "cc:", "dc:"))}  # the metadata block: who made the file, when
    assert kept == drawn
    assert inert(shown)


def test_trusted_output_passes_unchanged():
    bundle = {"text/html": "<script>1</script>", "application/javascript": "1"}
    assert outgoing_bundle(bundle, {}, trusted=True) == (bundle, {})
    assert outgoing_bundle(bundle, {}) != (bundle, {})


def test_widget_html_outputs_and_descriptions_are_sanitised():
    from agentkernel.sanitize import safe_comm_data

    opened = {"state": {"_model_name": "HTMLModel", "value": "<img src=x onerror=alert(1)>hi",
                        "description": "<b>d</b>", "description_allow_html": True},
              "buffer_paths": []}
    data = safe_comm_data("jupyter.widget", None, opened)
    assert inert(data["state"]["value"]) and "hi" in data["state"]["value"]
    assert data["state"]["description_allow_html"] is False
    update = {"method": "update", "state": {"value": "<script>alert(1)</script>"}}
    assert safe_comm_data("jupyter.widget", "HTMLMathModel", update)["state"]["value"] == ""
    assert safe_comm_data("jupyter.widget", "IntSliderModel", {"method": "update",
                          "state": {"value": 3}}) == {"method": "update", "state": {"value": 3}}
    output = {"method": "update", "state": {"outputs": [
        {"output_type": "display_data", "data": {"application/javascript": "alert(1)",
                                                 "text/plain": "js"}, "metadata": {}}]}}
    shown = safe_comm_data("jupyter.widget", "OutputModel", output)["state"]["outputs"][0]
    assert "application/javascript" not in shown["data"] and safe_to_show(shown["data"][
        "text/html"])
    other = {"anything": "<script>x</script>"}
    assert safe_comm_data("my.target", None, other) == other
