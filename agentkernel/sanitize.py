"""Sandbox output made safe to show in the user's page.

JupyterLab trusts the outputs of the current session: HTML with scripts, ``application/
javascript``, SVG event handlers and Markdown with raw HTML run with the page's origin, which
holds the Jupyter token and cookie (and from there ``POST /api/terminals`` is a shell on the
host). Output from a sandbox is untrusted, so by default:

- HTML, SVG, MathML and Markdown are sanitised with nh3 (ammonia), keeping what pandas tables,
  pandas Styler and matplotlib SVG need (tables, classes, inline styles, ``<style>``, SVG
  shapes) and MathML's presentation elements;
- LaTeX (``text/latex``, and the math in Markdown and HTML that the page typesets) keeps its
  ``\\href``/``\\url`` links only to the web or mail (:mod:`agentkernel.texlinks`);
- output that needs scripts (``application/javascript``, HTML with scripts, event handlers or
  frames: the interactive charts of plotly, bokeh, altair, folium) is shown inside an
  ``<iframe sandbox="allow-scripts">`` without ``allow-same-origin``: it runs in an opaque
  origin, with no access to the page, its cookies or the token;
- only mime types known to be inert are passed on; others are dropped (their text/plain stays).
  Of JupyterLab's own renderers, Vega/Vega-Lite (whose specs load URLs through the page's
  Jupyter server and run Vega expressions), Mermaid and PDF are not inert.

The operator may trust sandbox output (``c.SandboxPolicy.trust_output``); a cell may not.
"""

from __future__ import annotations

import html
import re
from typing import Any

import nh3

from .texlinks import without_unsafe_links

SVG_TAGS = {
    "svg", "g", "defs", "symbol", "use", "path", "rect", "circle", "ellipse", "line",
    "polyline", "polygon", "text", "tspan", "textPath", "clipPath", "mask", "pattern",
    "linearGradient", "radialGradient", "stop", "marker", "title", "desc", "metadata", "image",
    "filter", "feGaussianBlur", "feOffset", "feBlend", "feColorMatrix", "feMerge",
    "feMergeNode", "style",
}
SVG_ATTRIBUTES = {
    "viewBox", "preserveAspectRatio", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx",
    "ry", "d", "points", "transform", "fill", "fill-opacity", "fill-rule", "stroke",
    "stroke-width", "stroke-opacity", "stroke-linecap", "stroke-linejoin", "stroke-dasharray",
    "stroke-dashoffset", "stroke-miterlimit", "opacity", "clip-path", "clip-rule", "clipPathUnits",
    "mask", "font-family", "font-size", "font-weight", "font-style", "text-anchor",
    "dominant-baseline", "alignment-baseline", "href", "xlink:href", "gradientUnits",
    "gradientTransform", "offset", "stop-color", "stop-opacity", "markerWidth", "markerHeight",
    "refX", "refY", "orient", "markerUnits", "patternUnits", "patternTransform", "dx", "dy",
    "rotate", "textLength", "lengthAdjust", "visibility", "display", "color", "version",
    "xmlns", "filter", "stdDeviation", "in", "in2", "result", "mode", "values", "type",
}
# MathML Core and the presentation elements MathJax reads, without those that embed other
# markup or resources (annotation-xml, mglyph) or act on the page (maction).
MATHML_TAGS = {
    "math", "mi", "mn", "mo", "ms", "mspace", "mtext", "mrow", "mfrac", "msqrt", "mroot",
    "mstyle", "merror", "mpadded", "mphantom", "mfenced", "menclose", "msub", "msup",
    "msubsup", "munder", "mover", "munderover", "mmultiscripts", "mprescripts", "none",
    "mtable", "mtr", "mtd", "mlabeledtr", "semantics", "annotation",
}
MATHML_ATTRIBUTES = {
    "display", "displaystyle", "scriptlevel", "mathvariant", "mathsize", "mathcolor",
    "mathbackground", "dir", "xmlns", "encoding", "alttext", "fence", "separator", "stretchy",
    "symmetric", "largeop", "movablelimits", "accent", "accentunder", "form", "lspace",
    "rspace", "minsize", "maxsize", "linethickness", "bevelled", "numalign", "denomalign",
    "notation", "open", "close", "separators", "depth", "voffset", "columnalign", "rowalign",
    "columnlines", "rowlines", "columnspacing", "rowspacing", "columnspan", "frame",
    "framespacing", "equalrows", "equalcolumns", "subscriptshift", "superscriptshift",
    "lquote", "rquote", "side", "minlabelspacing", "indentalign", "intent", "arg",
}
GLOBAL_ATTRIBUTES = {
    "class", "id", "style", "title", "lang", "dir", "align", "valign", "width", "height",
    "border", "cellpadding", "cellspacing", "colspan", "rowspan", "scope", "headers",
    "bgcolor", "color", "size", "face", "data-mime-type", "scoped",
}
# No <wbr>: MathJax reads math across it, so ``\hr<wbr>ef`` would be ``\href`` to it.
HTML_TAGS = (nh3.ALLOWED_TAGS - {"wbr"}) | {"style", "font", "section", "label", "svg"} | \
    SVG_TAGS | MATHML_TAGS
MATHML_MIME = "application/mathml+xml"
SAFE_MIMES = {
    "text/plain", "text/latex", "image/png", "image/jpeg", "image/gif", "image/bmp",
    "image/webp", "application/json", "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json", "application/vnd.jupyter.stderr",
    "application/vnd.jupyter.stdout", "text/jsonl", "application/jsonl",
    "application/json-lines",
}
# Inert types whose value is JSON of any shape; the others' values must be strings (a list would
# reach the page joined, past what is checked here).
JSON_MIMES = {"application/json", "application/vnd.jupyter.widget-view+json",
              "application/vnd.jupyter.widget-state+json"}
SAFE_SCHEMES = {"http", "https", "mailto", "data"}
# What makes HTML need scripts (then it runs isolated in a frame, never in the page).
NEEDS_SCRIPTS = re.compile(
    r"<\s*(script|iframe|frame|object|embed|applet|base|meta|link|form)\b"
    r"|\son[a-z]+\s*=|javascript\s*:|vbscript\s*:",
    re.IGNORECASE,
)
RAW_HTML = re.compile(r"<[A-Za-z!/?]")
LINK_SCHEME = re.compile(r"(?:\]\(\s*<?|^\s*\[[^\]]*\]:\s*<?)\s*([A-Za-z][A-Za-z0-9+.-]*):",
                         re.MULTILINE)
# Heights of isolated outputs: a frame in an opaque origin cannot tell the page its size; the
# user can drag it taller (resize: vertical).
FRAME_HEIGHT = 360
SCRIPT_FRAME_HEIGHT = 120  # bare JavaScript, which seldom draws much


def _keep_url(element: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: a ``data:`` URL only as an ``<img>``'s image (an image element
    never runs scripts; elsewhere such a URL could carry a document)."""
    if attribute in ("href", "src", "xlink:href") and value.strip().lower().startswith("data:"):
        image = element == "img" and attribute == "src"
        return value if image and value.strip().lower().startswith("data:image/") else None
    return value


def clean_html(text: str) -> str:
    """``text`` (HTML, maybe with inline SVG) with every script, handler and frame removed."""
    cleaned = nh3.clean(
        text,
        tags=HTML_TAGS,
        clean_content_tags={"script"},
        attributes={"*": GLOBAL_ATTRIBUTES | SVG_ATTRIBUTES | MATHML_ATTRIBUTES,
                    **{t: set(a) for t, a in nh3.ALLOWED_ATTRIBUTES.items()}},
        attribute_filter=_keep_url,
        url_schemes=SAFE_SCHEMES,
        strip_comments=True,
    )
    return without_unsafe_links(cleaned, markup=True)


def clean_svg(text: str) -> str:
    """A sanitised standalone SVG document (what matplotlib's SVG needs is kept)."""
    cleaned = clean_html(text).strip()
    if "xlink:" in cleaned and "xmlns:xlink" not in cleaned:  # a namespace nh3 drops
        cleaned = re.sub(r"<svg\b", '<svg xmlns:xlink="http://www.w3.org/1999/xlink"',
                         cleaned, count=1)
    return cleaned


def clean_mathml(text: str) -> str:
    """A sanitised MathML document: presentation elements only, no link, script or handler."""
    return nh3.clean(
        text,
        tags=MATHML_TAGS,
        clean_content_tags={"script", "style"},
        attributes={"*": MATHML_ATTRIBUTES | {"class", "id", "style"}},
        url_schemes=set(),
        strip_comments=True,
    ).strip()


def isolated(page: str, height: int = FRAME_HEIGHT) -> str:
    """HTML that shows ``page`` (scripts included) in a frame with an opaque origin."""
    return (f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width: 100%; height: {height}px; border: 0; resize: vertical" '
            'title="sandbox output (isolated)"></iframe>')


def markdown_is_inert(text: str) -> bool:
    """True when Markdown holds no raw HTML and links only to web, mail or image data, and no
    TeX link but to the web or mail, in its source (the math the page takes out before it
    renders the Markdown) or in the text it renders to (the page typesets that too: its
    character references and backslash escapes could spell a ``\\href``)."""
    if RAW_HTML.search(text) or without_unsafe_links(text) != text:
        return False
    if not all(scheme.lower() in SAFE_SCHEMES for scheme in LINK_SCHEME.findall(text)):
        return False
    rendered = _render_markdown(text)
    return without_unsafe_links(rendered, markup=True) == rendered


def _render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).render(text)


def markdown_as_html(text: str) -> str:
    """Markdown rendered to sanitised HTML (for Markdown that is not inert)."""
    return clean_html(_render_markdown(text))


def safe_bundle(data: dict[str, Any], metadata: dict[str, Any]) -> tuple[dict, dict]:
    """The bundle as the page may see it: inert mime types kept, HTML/SVG/MathML/Markdown
    sanitised, scripts isolated in a frame, everything else dropped."""
    safe: dict[str, Any] = {}
    for mime, value in data.items():
        if mime in JSON_MIMES:
            safe[mime] = value
        elif mime in SAFE_MIMES and isinstance(value, str):
            safe[mime] = without_unsafe_links(value) if mime == "text/latex" else value
        elif mime == "image/svg+xml" and isinstance(value, str):
            safe[mime] = clean_svg(value)
        elif mime == MATHML_MIME and isinstance(value, str):
            safe[mime] = clean_mathml(value)
    page = data.get("text/html")
    script = data.get("application/javascript")
    markdown = data.get("text/markdown")
    if isinstance(page, str):
        safe["text/html"] = isolated(page) if NEEDS_SCRIPTS.search(page) else clean_html(page)
    elif isinstance(script, str):
        safe["text/html"] = isolated(f"<script>{script}</script>", SCRIPT_FRAME_HEIGHT)
    if isinstance(markdown, str):
        if markdown_is_inert(markdown):
            safe["text/markdown"] = markdown
        else:
            safe.setdefault("text/html", markdown_as_html(markdown))
    if not safe or set(safe) <= {"application/json"}:
        safe.setdefault("text/plain", f"<output of types {', '.join(sorted(data))} not shown: "
                                      "not safe to show from a sandbox>")
    meta = {mime: value for mime, value in metadata.items() if mime not in data or mime in safe}
    return safe, meta


# -- widgets ---------------------------------------------------------------------------------
WIDGET_TARGET = "jupyter.widget"
HTML_WIDGETS = {"HTMLModel", "HTMLMathModel"}
"""ipywidgets models whose ``value`` the page renders as HTML."""
TYPESET_WIDGETS = {"LabelModel"}
"""ipywidgets models whose ``value`` the page typesets as text with math (so do descriptions)."""


def safe_widget_state(model_name: str | None, state: dict[str, Any]) -> dict[str, Any]:
    """A widget's state (from a comm_open, or an update's delta) as the page may render it.

    The widget manager in the page renders some state as HTML: an HTML widget's value, any
    widget's description when ``description_allow_html`` is set, and an Output widget's
    outputs (rendered as the page's own outputs). Those are sanitised as any output is. The
    math in a Label's value and in descriptions is typeset: it keeps links to the web or mail
    only. Other state (numbers, text shown as text, styles) passes unchanged.
    """
    safe = dict(state)
    if "description_allow_html" in safe:
        safe["description_allow_html"] = False  # descriptions are shown as text
    if isinstance(safe.get("description"), str):
        safe["description"] = without_unsafe_links(safe["description"])
    if model_name in TYPESET_WIDGETS and isinstance(safe.get("value"), str):
        safe["value"] = without_unsafe_links(safe["value"])
    if model_name in HTML_WIDGETS and isinstance(safe.get("value"), str):
        safe["value"] = clean_html(safe["value"])
    if isinstance(safe.get("outputs"), list):
        safe["outputs"] = [_safe_output(output) for output in safe["outputs"]]
    return safe


def _safe_output(output: Any) -> Any:
    """One output of an Output widget (nbformat's shape)."""
    if isinstance(output, dict) and isinstance(output.get("data"), dict):
        metadata = output.get("metadata") if isinstance(output.get("metadata"), dict) else {}
        data, metadata = safe_bundle(output["data"], metadata)
        return {**output, "data": data, "metadata": metadata}
    return output


def safe_comm_data(target: str | None, model_name: str | None,
                   data: dict[str, Any]) -> dict[str, Any]:
    """A comm message's data from the sandbox, as the page may see it: widget states are
    sanitised (:func:`safe_widget_state`); other comms' data passes unchanged (the page runs
    no code from it unless an extension for that target does)."""
    if target != WIDGET_TARGET or not isinstance(data.get("state"), dict):
        return data
    name = data["state"].get("_model_name", model_name)
    return {**data, "state": safe_widget_state(name if isinstance(name, str) else None,
                                                data["state"])}
