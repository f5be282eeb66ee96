"""Sandbox output as the page may see it: hostile markup neutralised, real outputs kept.

The hostile samples are classic XSS vectors (OWASP's filter-evasion cheat sheet shapes) in
every mime type a notebook output can carry; the real ones are what pandas and matplotlib
produce (generated here with the host's pandas and matplotlib, the same versions as the test
image's).
"""

from __future__ import annotations

import collections
import html
import io
import re
import xml.dom.minidom

import pytest
from helpers.outputs import framed_source, inert, safe_to_show
from hypothesis import given
from hypothesis import strategies as st

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
    assert data["text/latex"] == "${x} \\href{https://a.b}{y}$"


# How MathJax's html extension and KaTeX document links: ``x \href{why-equal.html}{=} y^2 + 1``,
# ``\href{https://katex.org/}{\KaTeX}``, ``\url{https://katex.org/}``; then written as an
# attacker would: other schemes, the spaces, controls and case a browser ignores in a scheme
# (KaTeX's CVE-2024-28246 is the case), comments, and macros that rename ``\href``.
TEX_LINK_ATTACKS = [
    "x \\href{javascript:alert(1)}{=} y^2 + 1",
    "\\href {java\nscript:alert(1)}{x}",
    "\\href{ javascript:alert(1)}{x}",
    "\\href{JaVaScRiPt:alert(1)}{\\KaTeX}",
    "\\href{java\tscript:alert(1)}{x}",
    "\\href{\x01javascript:alert(1)}{x}",
    "\\href{java script:alert(1)}{x}",
    "\\url{javascript:alert(1)}",
    "\\href{data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==}{x}",
    "\\href{vbscript:msgbox(1)}{x}",
    "\\href%\n{javascript:alert(1)}{x}",
    "\\href\\relax{javascript:alert(1)}{x}",
    "\\let\\h\\href{https://jupyter.org}\\h{javascript:alert(1)}{x}",
    "\\def\\h{\\href}\\h{javascript:alert(1)}{x}",
    "\\newcommand{\\h}[1]{\\href{#1}{x}}\\h{javascript:alert(1)}",
    "\\href{https://jupyter.org}{\\href{javascript:alert(1)}{y}}",
]
TEX_LINKS_KEPT = [
    "$x \\href{why-equal.html}{=} y^2 + 1$",
    "$\\href{https://katex.org/}{\\KaTeX}$",
    "$\\url{https://katex.org/}$",
    "$\\href{mailto:a@b.c}{a}$ and $a \\\\ href{javascript:x}$",
]
TEX_COMMAND = re.compile(r"(?<!\\)(?:\\\\)*\\(href|url)(?![A-Za-z])")


def unsafe_tex_links(tex: str) -> list[str]:
    """The TeX links of ``tex`` that a cautious reader could not call web links: any link when
    ``tex`` defines a macro, else a link whose braced URL (spaces and controls dropped) has a
    scheme other than http, https or mailto, or that is followed by no braced URL."""
    if re.search(r"\\(def|let|newcommand)\b", tex):
        return TEX_COMMAND.findall(tex)
    found = []
    for match in TEX_COMMAND.finditer(tex):
        url = re.match(r"[ \t\n]*\{([^}]*)\}", tex[match.end():])
        scheme = url and re.match(r"([a-z][a-z0-9+.-]*):",
                                  re.sub(r"[\x00-\x20]", "", url.group(1)).lower())
        if url is None or (scheme and scheme.group(1) not in ("http", "https", "mailto")):
            found.append(tex[match.start():match.start() + 40])
    return found


@pytest.mark.parametrize("tex", TEX_LINK_ATTACKS)
def test_latex_links_lose_every_link_but_to_the_web(tex):
    assert unsafe_tex_links(tex), "the sample is an attack"
    for mime, text in (("text/latex", f"${tex}$"), ("text/markdown", f"Say ${tex}$")):
        shown = safe_bundle({mime: text, "text/plain": "x"}, {})[0]
        assert not unsafe_tex_links(shown.get(mime) or shown["text/html"]), shown


@pytest.mark.parametrize("tex", TEX_LINKS_KEPT)
def test_latex_links_to_the_web_stay(tex):
    assert safe_bundle({"text/latex": tex}, {})[0] == {"text/latex": tex}
    assert markdown_is_inert(f"Say {tex}")


@pytest.mark.parametrize("markup", [
    "<p>$\\hr<wbr>ef{java&#x09;script:alert(1)}{x}$</p>",   # MathJax reads across <wbr>
    "<p>\\(\\href{jav&#x61;script&colon;alert(1)}{x}\\)</p>",
])
def test_latex_links_in_html_are_read_as_mathjax_reads_the_page(markup):
    shown = safe_bundle({"text/html": markup}, {})[0]["text/html"]
    mathjax_reads = html.unescape(re.sub(r"<wbr\s*/?>|<!--.*?-->", "", shown))
    assert not unsafe_tex_links(re.sub(r"<[^>]*>", "", mathjax_reads)), shown


@pytest.mark.parametrize("markdown", [
    "&#36;&#92;href{javascript:alert(1)}{x}&#36;",   # character references the page decodes
    "&#36;\\\\href{javascript:alert(1)}{x}&#36;",   # a backslash escape it renders as one
])
def test_markdown_that_renders_to_a_tex_link_is_not_inert(markdown):
    assert not markdown_is_inert(markdown)
    shown = safe_bundle({"text/markdown": markdown}, {})[0]
    assert "text/markdown" not in shown and not unsafe_tex_links(shown["text/html"])


def test_text_values_that_are_not_strings_are_dropped():
    """A list would reach the page joined, past every check made on a string."""
    data, _ = safe_bundle({"text/latex": ["$\\href{javascript:alert(1)}{x}$"],
                           "text/plain": ["a"], "application/json": ["a", 1]}, {})
    assert data == {"application/json": ["a", 1], "text/plain": data["text/plain"]}
    assert isinstance(data["text/plain"], str)


# The quadratic formula as MDN's MathML reference writes it, and MathML written by an attacker.
QUADRATIC = ('<math display="block"><mi>x</mi><mo>=</mo><mfrac><mrow><mo form="prefix">−</mo>'
             '<mi>b</mi><mo>±</mo><msqrt><msup><mi>b</mi><mn>2</mn></msup><mo>−</mo><mn>4</mn>'
             '<mi>a</mi><mi>c</mi></msqrt></mrow><mrow><mn>2</mn><mi>a</mi></mrow></mfrac></math>')
HOSTILE_MATHML = [
    '<math><mrow href="javascript:window.pwned=1"><mi>x</mi></mrow></math>',
    '<math><mi onclick="window.pwned=1">x</mi></math>',
    '<math><maction actiontype="statusline" xlink:href="javascript:window.pwned=1"><mi>x</mi>'
    '</maction></math>',
    '<math><semantics><mi>x</mi><annotation-xml encoding="text/html"><img src=x '
    'onerror="window.pwned=1"></annotation-xml></semantics></math>',
    '<math><mtext><script>window.pwned=1</script></mtext></math>',
    '<math><mtext><table><mglyph><style><img src=x onerror=window.pwned=1></style></mtext></math>',
]


def test_mathml_is_sanitised_and_kept():
    for mime in ("application/mathml+xml", "text/html"):
        data, _ = safe_bundle({mime: QUADRATIC, "text/plain": "x"}, {})
        assert data[mime] == QUADRATIC, mime


@pytest.mark.parametrize("markup", HOSTILE_MATHML)
def test_hostile_mathml_loses_its_links_scripts_and_handlers(markup):
    for mime in ("application/mathml+xml", "text/html"):
        shown = safe_bundle({mime: markup, "text/plain": "x"}, {})[0][mime]
        assert safe_to_show(shown), shown
        if framed_source(shown) is None:  # sanitised, not isolated in a frame
            assert "<math" in shown and "pwned" not in shown, shown


# Sequences terminals act on (xterm's control sequences; OSC 8 as the hyperlink spec writes it)
# and IPython's own coloured traceback, which must arrive as it is.
TERMINAL_ATTACKS = [
    "\x1b]52;c;cm0gLXJmIH4K\x07",                            # OSC 52: set the clipboard
    "\x1b]0;pwned\x07", "\x1b]2;pwned\x1b\\",                # OSC 0/2: window title
    "\x1b]8;;javascript:alert(1)\x1b\\click\x1b]8;;\x1b\\",  # OSC 8: a hyperlink
    "\x1bP+q544e\x1b\\", "\x1b_apc\x1b\\", "\x1b^pm\x1b\\",  # DCS, APC, PM
    "\x1b[2J\x1b[H", "\x1bc", "\x1b[?1049h", "\x1b[>4;2m",    # clear, reset, modes
    "\x9d0;pwned\x9c", "\x9b2J",                             # 8-bit (C1) forms
    "\x1b]52;c;cm0gLXJmIH4K",                                # cut off at the end
]


def ipython_traceback() -> list[str]:
    from IPython.core.ultratb import AutoFormattedTB

    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as err:
        return AutoFormattedTB(mode="Context", theme_name="linux").structured_traceback(
            type(err), err, err.__traceback__)
    raise AssertionError


def controls(text: str) -> list[str]:
    """Every ESC or C1 control in ``text`` that does not start a whole SGR sequence."""
    return [m.group(0) for m in re.finditer(r"\x1b\[[0-9;:]*m|[\x1b\x80-\x9f]", text)
            if not m.group(0).endswith("m")]


@pytest.mark.parametrize("sequence", TERMINAL_ATTACKS)
def test_terminal_control_sequences_do_not_reach_the_frontend(sequence):
    from agentkernel.frontend import ErrorReport, outgoing_text

    text = f"before {sequence} \x1b[31mred\x1b[0m after"
    shown = outgoing_text(text)
    assert not controls(shown) and "pwned" not in shown, repr(shown)
    assert shown.startswith("before ") and shown.endswith("\x1b[31mred\x1b[0m after")
    report = ErrorReport.of_event({"ename": "E", "evalue": text, "traceback": [text]})
    assert not controls(report.evalue) and not controls(report.traceback[0])
    data, _ = outgoing_bundle({"text/plain": text}, {})
    assert not controls(data["text/plain"])


def test_ipython_tracebacks_keep_their_colours():
    from agentkernel.frontend import ErrorReport

    lines = ipython_traceback()
    assert any("\x1b[" in line for line in lines)
    report = ErrorReport.of_event({"ename": "ZeroDivisionError", "evalue": "division by zero",
                                   "traceback": lines})
    assert report.traceback == lines


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


def test_math_that_widgets_typeset_keeps_only_web_links():
    """ipywidgets typesets a Label's value and every description (its documentation writes
    them as ``r'\\(\\int_0^t f\\)'``); a link to a script must not survive there."""
    from agentkernel.sanitize import safe_comm_data

    tex = r"\(\href{javascript:alert(1)}{\int_0^t f}\)"
    label = {"state": {"_model_name": "LabelModel", "value": tex, "description": tex}}
    state = safe_comm_data("jupyter.widget", None, label)["state"]
    assert not unsafe_tex_links(state["value"]) and not unsafe_tex_links(state["description"])
    assert state["value"] == r"\({\int_0^t f}\)"
    slider = {"method": "update", "state": {"description": r"\(\int_0^t f\)"}}
    assert safe_comm_data("jupyter.widget", "IntSliderModel", slider) == slider


def test_colours_split_between_stream_pieces_arrive_whole():
    """The sandbox's pipes split a large write anywhere, also inside a colour code."""
    from agentkernel.frontend import StreamText

    text = "".join(ipython_traceback()) + "\x1b]0;pwned\x07"
    for cut in range(1, len(text)):
        streams = StreamText()
        shown = streams.feed("stderr", text[:cut]) + streams.feed("stderr", text[cut:])
        assert shown == text.removesuffix("\x1b]0;pwned\x07"), cut


@given(st.text(alphabet=st.sampled_from(list("ab;0123m:?@~ P_^X\n\\[]\x07\x1b\x80\x90\x9b\x9c"
                                             "\x9d\x9f\u00e9")), max_size=60))
def test_control_sequences_found_by_their_introducers_as_a_scan_would(text):
    """The removal only matches where a sequence can start (a fast scan for its introducers,
    str.find on ASCII text): the same result as the sequences' pattern applied by re.sub,
    which tries it at every character."""
    from agentkernel import termtext

    reference = termtext._SEQUENCE.sub(termtext._keep_sgr, text)
    assert termtext.without_control_sequences(text) == reference
    ascii_only = text.encode("ascii", "ignore").decode()
    assert termtext.without_control_sequences(ascii_only) == termtext._SEQUENCE.sub(
        termtext._keep_sgr, ascii_only)
