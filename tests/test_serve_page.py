"""The page at / in a real browser: Debian's chromium, headless, driven by Selenium through Debian's chromedriver
(nothing downloads a browser). A real photo is picked in the file input; the labels, the legend, the heatmaps and
the model card are read off the page and held to the engine's own answers.

`.ci/run` installs chromium and chromium-driver; without them these tests fail, they do not skip.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from serving import SCENE, Server
from tinyvit_engine.weights import DEMO_CLASSIFIER, DEMO_SEGMENTER

import tinyvit_engine as tve
from tinyvit_engine.api.explain import heatmaps as heatmaps_of

PHOTOS = Path(__file__).parent / "data" / "images"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = os.environ.get("TINYVIT_PAGE_SCREENSHOT")  # a path: save the segmenter's page there (README's picture)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "apt-get install chromium chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI's container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",  # the machine's network is closed: no calls home
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1280,1320",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(browser, server):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element("css selector", "#card tr[data-field=task]"))
    return wait


def pick(browser, wait, photo: Path, times: int = 1):
    browser.find_element("id", "file").send_keys(str(photo.resolve()))
    wait.until(lambda b: b.find_element("tag name", "body").get_attribute("data-explained") == str(times))


def card(browser) -> dict:
    rows = browser.find_elements("css selector", "#card tr")
    return {r.get_attribute("data-field"): r.find_elements("tag name", "td")[1].text for r in rows}


def test_classify_a_photo_on_the_page(browser):
    server = Server(DEMO_CLASSIFIER)
    try:
        wait = open_page(browser, server)
        assert card(browser)["family"] == "mobilevit" and card(browser)["input size"] == "64 × 64"
        photo = PHOTOS / "chelsea.png"
        pick(browser, wait, photo)
        bars = browser.find_elements("css selector", "#result .bar")
        shown = [(b.find_element("class name", "label").text, float(b.find_element("class name", "score").text))
                 for b in bars]  # fmt: skip
        model = tve.load(DEMO_CLASSIFIER)
        want = model.classify(photo, top_k=5)
        assert [label for label, _ in shown] == [w["label"] for w in want]
        np.testing.assert_allclose([s for _, s in shown], [w["score"] for w in want], atol=5e-4)
        heatmaps = browser.find_elements("css selector", "#heatmaps img")
        layers = len(heatmaps_of(model, photo)[1])
        assert len(heatmaps) == layers > 1 and all(img.get_attribute("naturalWidth") == "64" for img in heatmaps)
        assert "answered in" in browser.find_element("id", "status").text
    finally:
        server.stop()


def test_segment_a_photo_with_overlay_legend_and_opacity(browser):
    server = Server(DEMO_SEGMENTER)
    try:
        wait = open_page(browser, server)
        assert card(browser)["task"] == "semantic-segmentation"
        pick(browser, wait, SCENE)
        legend = [e.text for e in browser.find_elements("css selector", "#result .segment .label")]
        want = tve.load(DEMO_SEGMENTER).segment(SCENE)
        assert legend == [s["label"] for s in want["segments"]]
        shares = [float(e.text.rstrip("%")) for e in browser.find_elements("css selector", "#result .segment .share")]
        counts = np.bincount(want["label_map"].ravel())
        np.testing.assert_allclose(shares, [100 * c / want["label_map"].size for c in counts if c], atol=0.6)

        def canvas_at(opacity: int) -> str:
            return browser.execute_script(
                "const s = document.getElementById('opacity'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('input')); return document.getElementById('view').toDataURL();",
                opacity,
            )

        bare, half, full = canvas_at(0), canvas_at(50), canvas_at(100)
        assert len({bare, half, full}) == 3  # the slider changes the overlay
        assert browser.find_elements("css selector", "#heatmaps img")
        if SCREENSHOT:
            canvas_at(60)
            browser.save_screenshot(SCREENSHOT)
    finally:
        server.stop()


def test_a_bad_file_on_the_page_says_why(browser, tmp_path):
    server = Server(DEMO_CLASSIFIER)
    try:
        wait = open_page(browser, server)
        broken = tmp_path / "broken.png"
        broken.write_bytes((PHOTOS / "chelsea.png").read_bytes()[:300])
        browser.find_element("id", "file").send_keys(str(broken))
        wait.until(lambda b: "error" in b.find_element("id", "status").get_attribute("class"))
        assert "cannot read image" in browser.find_element("id", "status").text
    finally:
        server.stop()


def test_drop_and_paste_an_image(browser):
    """The two other ways in: a file dropped on the drop zone, and an image pasted (events made in the page, as the
    browser makes them for a real drag or Ctrl+V)."""
    import base64

    server = Server(DEMO_CLASSIFIER)
    try:
        wait = open_page(browser, server)
        photo = PHOTOS / "coffee.png"
        want = [w["label"] for w in tve.load(DEMO_CLASSIFIER).classify(photo, top_k=5)]
        send = """
            const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "coffee.png", { type: "image/png" }));
            const drop = document.getElementById("drop");
            if (arguments[1] === "drop") drop.dispatchEvent(new DragEvent("drop", { dataTransfer: data }));
            else document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data }));
        """
        for times, how in enumerate(["drop", "paste"], start=1):
            browser.execute_script(send, base64.b64encode(photo.read_bytes()).decode(), how)
            wait.until(lambda b, n=times: b.find_element("tag name", "body").get_attribute("data-explained") == str(n))
            labels = [e.text for e in browser.find_elements("css selector", "#result .bar .label")]
            assert labels == want, how
    finally:
        server.stop()
