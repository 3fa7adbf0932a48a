"""The docs' equations: written as LaTeX ($...$, $$...$$), turned into math spans by pymdownx.arithmatex and rendered
in the browser by the KaTeX vendored in docs/assets/katex/, so the built site loads nothing from outside. The site is
built once (mkdocs build --strict, a few seconds) into a temporary folder; one test opens its pages in Chromium."""
from __future__ import annotations

import functools
import hashlib
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
KATEX = DOCS / "assets" / "katex"
CONCEPTS = sorted(p.stem for p in (DOCS / "concepts").glob("*.md"))
# Pages outside docs/concepts/ that show math too (each must keep some, or leave this list)
OTHER_MATH_PAGES = ["quickstart", "howto/explain", "howto/posthoc-ema"]
# What a formula typed as code looks like: Greek letters and math symbols (prose may have them in image alt text)
MATH_SYMBOL = re.compile(r"[α-ωΑ-Ωᾱ∇‖²√∏∑∝≈≤≥∅]")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e .[docs])")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


class _Refs(html.parser.HTMLParser):
    """Every URL a page makes the browser fetch by itself: script src, link href (stylesheets, icons, preloads),
    img/iframe/source src."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.urls.append(a["src"])
        elif tag == "link" and a.get("href") and a.get("rel") not in ("prev", "next", "canonical", "alternate"):
            self.urls.append(a["href"])


def _external(url: str) -> bool:
    return bool(re.match(r"([a-z][a-z0-9+.-]*:|//)", url, re.I)) and not url.startswith("data:")


def test_no_page_loads_anything_from_outside(site):
    """No script, stylesheet, font or image of any built page comes from another host: no http(s) or
    protocol-relative URL in the pages' src/href or in the CSS files' url(...)/@import."""
    bad = []
    for page in sorted(site.rglob("*.html")):
        refs = _Refs()
        refs.feed(page.read_text())
        bad += [f"{page.relative_to(site)}: {u}" for u in refs.urls if _external(u)]
    for css in sorted(site.rglob("*.css")):
        for u in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])([^'\")\s]+)", css.read_text()):
            if _external(u):
                bad.append(f"{css.relative_to(site)}: {u}")
    assert bad == []


def test_every_page_loads_the_vendored_katex_and_it_is_in_the_site(site):
    wanted = ["assets/katex/katex.min.js", "assets/katex/contrib/auto-render.min.js", "javascripts/katex-init.js",
              "assets/katex/katex.min.css"]
    for rel in wanted:
        assert (site / rel).is_file(), rel
    for name in [f"concepts/{c}" for c in CONCEPTS] + OTHER_MATH_PAGES:
        refs = _Refs()
        refs.feed(_page(site, name))
        loaded = {u.lstrip("./") for u in refs.urls}
        assert set(wanted) <= loaded, (name, set(wanted) - loaded)
    # every font the stylesheet names first (woff2, what browsers fetch) is shipped
    css = (site / "assets/katex/katex.min.css").read_text()
    fonts = re.findall(r"url\((fonts/[\w-]+\.woff2)\)", css)
    assert len(fonts) >= 20 and [f for f in fonts if not (site / "assets/katex" / f).is_file()] == []


def test_vendored_katex_is_the_release_its_readme_names():
    """docs/assets/katex/ is KaTeX as released: each file's sha256 is the one README.txt lists, the version in
    the README is the one in katex.min.js, and the MIT licence ships beside it."""
    readme = (KATEX / "README.txt").read_text()
    version = re.match(r"KaTeX (\d+\.\d+\.\d+)", readme).group(1)
    assert f'version:"{version}"' in (KATEX / "katex.min.js").read_text()
    assert "MIT License" in (KATEX / "LICENSE").read_text()
    sums = dict((path, digest) for digest, path in re.findall(r"^\s+([0-9a-f]{64})\s+(\S+)$", readme, re.M))
    shipped = {p.relative_to(KATEX).as_posix() for p in KATEX.rglob("*") if p.is_file()} - {"README.txt", "LICENSE"}
    assert set(sums) == shipped
    assert {p: hashlib.sha256((KATEX / p).read_bytes()).hexdigest() for p in sums} == sums


def test_concept_pages_write_equations_as_math(site):
    """Every concept page has math spans in its HTML, and none types a formula as code: no code span or text block
    of a concept page holds a Greek letter or a math symbol (write $\\sigma$, not `σ`)."""
    for name in CONCEPTS:
        assert 'class="arithmatex"' in _page(site, f"concepts/{name}"), name
        text = (DOCS / "concepts" / f"{name}.md").read_text()
        fences = re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        code = [body for lang, body in fences if lang in ("", "text")] + re.findall(r"`([^`\n]+)`", prose)
        assert [c for c in code if MATH_SYMBOL.search(c)] == [], name
    for name in OTHER_MATH_PAGES:
        assert 'class="arithmatex"' in _page(site, name), name


def test_a_dollar_in_code_is_not_math(site):
    """`$NOISECRAFT_CACHE` (a code span with a dollar) stays code: only $...$ outside code becomes math."""
    page = _page(site, "concepts/metrics")
    assert "<code>$NOISECRAFT_CACHE</code>" in page
    assert "NOISECRAFT_CACHE" not in "".join(re.findall(r'class="arithmatex">(.*?)</', page))


# ---------------------------------------------------------------- in a browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


# What KaTeX could not render: a formula that does not parse becomes a .katex-error, an unknown command is drawn in
# its errorColor (#cc0000) inside the formula
KATEX_ERRORS = """() => [...document.querySelectorAll(".katex-error, .katex [style]")]
  .filter(e => e.classList.contains("katex-error") || getComputedStyle(e).color === "rgb(204, 0, 0)")
  .map(e => e.textContent)"""
# KaTeX's main font loads (from the site: any other host would show in the request log): awaited by name, since
# the rendered formulas may not have asked for it yet when the page's load event fires
KATEX_FONT_LOADED = """() => document.fonts.load('1em "KaTeX_Main"').then(faces =>
  faces.some(f => f.family.replace(/"/g, "") === "KaTeX_Main" && f.status === "loaded"))"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium; .ci/run does)")
def test_katex_renders_every_equation_in_chromium(site):
    """Each page with math, served from a local HTTP server and opened in Chromium: every arithmatex span became
    KaTeX, with no error in it, KaTeX's own font is loaded, and the page asked for nothing outside the server
    and got no 4xx/5xx answer."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            outside, failed, errors = [], [], []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((base, "data:")) else None)
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            for name in [f"concepts/{c}" for c in CONCEPTS] + OTHER_MATH_PAGES:
                page.goto(base + name + "/")  # returns at "load": scripts and stylesheets in; fonts are awaited below
                spans = page.locator(".arithmatex").count()
                assert spans > 0, name
                done = "document.querySelectorAll('.arithmatex .katex, .arithmatex .katex-error').length"
                page.wait_for_function(f"{done} >= {spans}")
                assert page.evaluate(KATEX_ERRORS) == [], name
                assert page.evaluate(KATEX_FONT_LOADED), name
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (outside, failed, errors) == ([], [], [])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output to the test's own
        pass
