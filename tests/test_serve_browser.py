"""The web app in a real browser (Debian's Chromium driven by Playwright): generate from a tiny checkpoint and see
the live preview change at least three times and then the images, cancel a second job, keep the gallery across a
reload, reuse an image's settings, and open the runs page with its curves and sample grids. Screenshots go to
tests/.screenshots/ (or $NOISECRAFT_SCREENSHOTS). A model's LoRA adapters show as a scale slider each."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")

from serve_support import LiveServer  # noqa: E402

expect = sync_api.expect

from noisecraft.serve import ServeConfig  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's Chromium, headless, as root, with no calls home (this machine's closed network refuses them)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(os.environ.get("NOISECRAFT_SCREENSHOTS", Path(__file__).parent / ".screenshots"))

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium; .ci/run does)")

# Every distinct preview frame the page shows, recorded as it is set.
WATCH_PREVIEW = """() => {
  window.frames_seen = new Set();
  new MutationObserver(() => window.frames_seen.add(document.getElementById("preview").src))
    .observe(document.getElementById("preview"), {attributes: true, attributeFilter: ["src"]});
}"""


@pytest.fixture(scope="module")
def page(tiny_runs):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with LiveServer(ServeConfig(runs=tiny_runs, device="cpu")) as live, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.base_url, page.live, page.errors = live.url, live, errors
        yield page
        browser.close()


def open_with_digits(page, path: str) -> None:
    """Open a page of the app and choose the digits model once the model list has loaded."""
    page.goto(page.base_url + path)
    page.wait_for_selector("#model option[value=digits]", state="attached")
    page.select_option("#model", "digits")


def test_generate_with_live_preview_cancel_gallery_and_reuse(page):
    open_with_digits(page, "/")
    page.select_option("#class", "3")
    page.fill("#steps", "80")
    page.fill("#n", "4")
    page.fill("#seed", "21")
    page.evaluate(WATCH_PREVIEW)
    page.click("#generate")
    expect(page.locator("#gallery .card")).to_have_count(4, timeout=60_000)
    assert page.evaluate("window.frames_seen.size") >= 3  # the x0 estimate, live, step after step
    assert page.inner_text("#status").startswith("done: 4 image(s)")
    cards = page.locator("#gallery .card")
    assert cards.first.locator("a").get_attribute("href").startswith("data:image/png;base64,")  # the download
    assert "seed 21" in cards.first.inner_text() and "class 3" in cards.first.inner_text()
    page.screenshot(path=SHOTS / "generate.png", full_page=True)

    # a second, long job: cancel stops it, and it adds nothing to the gallery
    page.fill("#steps", "1000")
    page.fill("#n", "16")
    page.click("#generate")
    expect(page.locator("#status")).to_have_text(re.compile(r"^step \d+ / 1000"), timeout=30_000)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text(re.compile("^cancelled"), timeout=10_000)
    assert page.live.service.queue.jobs()[-1].state == "cancelled"
    assert page.locator("#gallery .card").count() == 4
    page.screenshot(path=SHOTS / "generate-cancelled.png", full_page=True)

    # the gallery survives a reload; "reuse" fills the form to draw that very image again
    page.reload()
    page.wait_for_selector("#gallery .card")
    assert page.locator("#gallery .card").count() == 4
    page.locator("#gallery .card").nth(2).locator("button", has_text="reuse").click()
    assert (page.input_value("#seed"), page.input_value("#n"), page.input_value("#class")) == ("23", "1", "3")
    assert page.input_value("#steps") == "80" and not page.errors, page.errors


def test_runs_page_shows_curves_grids_and_compares_runs(page):
    page.goto(page.base_url + "/runs?run=digits")
    page.wait_for_selector("#runs-table tbody tr[data-run=digits]")
    expect(page.locator("#loss-chart path.series")).to_have_count(2, timeout=20_000)  # train loss, validation
    assert "finished" in page.inner_text("#runs-table tbody tr[data-run=digits]")
    page.locator("#runs-table tbody tr[data-run=digits-b] input[type=checkbox]").check()
    expect(page.locator("#loss-chart path.series")).to_have_count(4)  # and the compared run's
    # the sample grids over training: step 2, then the final grid
    assert page.inner_text("#grid-label").startswith("final samples")
    page.locator("#grid-slider").fill("0")
    assert page.inner_text("#grid-label").startswith("step 2")
    expect(page.locator("#grid-img")).to_have_js_property("complete", True)
    assert page.evaluate("document.getElementById('grid-img').naturalWidth") > 0
    assert '"base_channels": 8' in page.inner_text("#config")  # model.unet's
    page.screenshot(path=SHOTS / "runs.png", full_page=True)
    assert not page.errors, page.errors


# When each grid cell is filled in, and what the status line said then.
WATCH_CELLS = """() => {
  window.cells_seen = [];
  new MutationObserver((records) => {
    for (const r of records) if (r.target.matches && r.target.matches("td.done") && r.type === "attributes")
      window.cells_seen.push(document.getElementById("status").textContent);
  }).observe(document.getElementById("grid"), {attributes: true, attributeFilter: ["class"], subtree: true});
}"""


def test_grid_page_picks_axes_fills_cells_live_and_reuses_a_cell(page):
    open_with_digits(page, "/grid")
    page.select_option("#x-axis", "steps")
    page.fill("#x-values", "2, 40")
    page.select_option("#y-axis", "guidance")
    page.fill("#y-values", "0-2 [2]")
    page.select_option("#class", "6")
    page.fill("#n", "2")
    page.fill("#seed", "9")
    page.evaluate(WATCH_CELLS)
    page.click("#draw")
    expect(page.locator("#grid td.done img")).to_have_count(4, timeout=90_000)
    expect(page.locator("#status")).to_have_text(re.compile("^done: 4 cells"), timeout=30_000)
    seen = page.evaluate("window.cells_seen")
    assert len(seen) == 4 and seen[0].startswith("step"), seen  # the 2-step cells came while the rest were drawn
    assert page.locator("#grid th", has_text="40").count() == 1 and page.locator("#sheet").is_visible()
    page.screenshot(path=SHOTS / "grid.png", full_page=True)

    page.locator("#grid td[data-index='3'] img").click()  # steps 40, guidance 2
    page.wait_for_url(page.base_url + "/")
    expect(page.locator("#status")).to_have_text("settings filled in from the grid cell", timeout=10_000)
    assert (page.input_value("#steps"), page.input_value("#guidance"), page.input_value("#seed"),
            page.input_value("#n"), page.input_value("#class")) == ("40", "2", "9", "2", "6")
    assert not page.errors, page.errors


def _stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """A mouse stroke through `points` (fractions of the element's box)."""
    box = page.locator(selector).bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for p in xy[1:]:
        page.mouse.move(*p, steps=5)
    page.mouse.up()


def test_edit_page_draws_paints_a_mask_and_edits(page):
    open_with_digits(page, "/edit")
    before = page.locator("#gallery .card").count()  # the gallery is the generate page's too
    _stroke(page, "#mask", [(0.5, 0.2), (0.5, 0.8)])  # a hand-drawn "1"
    drawn = page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let white = 0; for (let i = 0; i < d.length; i += 4) white += d[i] > 127; return white; }""")
    assert drawn > 50
    page.check("input[name=tool][value=mask]")
    _stroke(page, "#mask", [(0.1, 0.75), (0.9, 0.75)])  # regenerate a band across the bottom
    page.select_option("#class", "7")
    page.fill("#steps", "3")
    page.fill("#n", "2")
    page.click("#edit")
    expect(page.locator("#gallery .card")).to_have_count(before + 2, timeout=60_000)
    assert page.inner_text("#status").startswith("done: 2 image(s)")
    job = page.live.service.queue.jobs()[-1]
    src = job.spec.request.source
    assert src.mask is not None and src.mask[0, 0, 21].any() and not src.mask[0, 0, 5].any()
    assert src.images[0, 0, 5:8, 13:15].float().mean() > 127  # the stroke reached the server at the model's size
    assert "inpaint 1" in page.locator("#gallery .card").first.inner_text()
    page.screenshot(path=SHOTS / "edit.png", full_page=True)

    # "edit" on a generated image hands it to the edit page
    page.goto(page.base_url + "/")
    page.wait_for_selector("#gallery .card")
    page.locator("#gallery .card").first.locator("button", has_text="edit").click()
    page.wait_for_url("**/edit")
    expect(page.locator("#status")).to_have_text(re.compile("^(image loaded|settings filled)"), timeout=10_000)
    assert not page.errors, page.errors


@pytest.fixture(scope="module")
def lora_page(page, tiny_runs, tmp_path_factory):
    """The web app over a copy of the tiny class run and a 2-step LoRA fine-tuning of it on sevens, in a second tab
    of `page`'s browser (one Playwright session a module)."""
    from PIL import Image

    from noisecraft.cli import main
    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset

    root = tmp_path_factory.mktemp("lora_browser")
    shutil.copytree(tiny_runs / "digits", root / "runs" / "digits")
    data = load_dataset(DataConfig(), "train")
    (root / "sevens" / "7").mkdir(parents=True)
    for i, img in enumerate(data.images[data.labels == 7][:6]):
        Image.fromarray(img[0].numpy()).save(root / "sevens" / "7" / f"{i}.png")
    assert main(["finetune", "--checkpoint", str(root / "runs" / "digits"), "--data-root", str(root / "sevens"),
                 "--out", str(root / "runs" / "sevens"), "--steps", "2", "--rank", "2", "--no-progress",
                 "--train.batch_size=4", "--finetune.prior_images=4",
                 "--train.num_threads=1"]) == 0
    with LiveServer(ServeConfig(runs=root / "runs", device="cpu")) as live:
        tab = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
        tab.base_url, tab.live = live.url, live
        yield tab
        tab.close()


def test_generate_lists_a_models_adapters_with_a_scale_slider_each(lora_page):
    page = lora_page
    open_with_digits(page, "/")
    slider = page.locator("#loras input[data-lora=sevens]")
    expect(slider).to_be_visible()
    assert "trigger: 7" in page.inner_text("#loras")
    slider.evaluate("s => { s.value = '0.8'; s.dispatchEvent(new Event('input')); }")
    page.fill("#steps", "2")
    page.fill("#n", "2")
    with page.expect_request("**/api/generate") as sent:
        page.click("#generate")
    assert sent.value.post_data_json["loras"] == {"sevens": 0.8}
    expect(page.locator("#gallery .card")).to_have_count(2, timeout=60_000)
    job = page.live.service.queue.jobs()[-1]
    assert [(name, scale) for name, _, scale in job.spec.request.loras] == [("sevens", 0.8)]
    page.screenshot(path=SHOTS / "generate-lora.png", full_page=True)
    page.select_option("#model", "sevens")  # the fine-tuning itself is a model: its base with its adapter
    expect(page.locator("#lora-row")).to_be_hidden()
