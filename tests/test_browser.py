"""Real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a live server.

CI installs the browser and sets REQUIRE_BROWSER=1, so these fail there rather than skip. Set
SCREENSHOT_DIR to keep screenshots of the index, result and batch pages (the README's come from
`SCREENSHOT_DIR=docs/screenshots python -m pytest tests/test_browser.py`).
"""
import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app import create_app
from cifarlab import atomic
from tests.helpers import free_port
from tests.test_readme import SCREENSHOTS_MANIFEST, screenshots_manifest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("REQUIRE_BROWSER"):
        raise RuntimeError("REQUIRE_BROWSER is set but chromium/chromedriver are not installed")
    pytest.skip("Debian chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

EXAMPLES = sorted((ROOT / "static" / "examples").glob("*.png"))


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    """The app with the shipped model and CSRF on, served over HTTP on a loopback port."""
    app = create_app({"UPLOAD_FOLDER": str(tmp_path_factory.mktemp("uploads")), "SECRET_KEY": "browser-test"})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    # poll often: shutdown() waits out one poll (0.5 s by default)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def make_driver(javascript=True):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1300"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(20)  # seconds to wait for elements of the next page (a batch takes a moment)
    return driver


@pytest.fixture(scope="module", params=[True, False], ids=["js", "no-js"])
def browser(request):
    driver = make_driver(javascript=request.param)
    driver.javascript = request.param
    yield driver
    driver.quit()


def screenshot(driver, name):
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder and driver.javascript:
        os.makedirs(folder, exist_ok=True)
        driver.save_screenshot(os.path.join(folder, f"{name}.png"))
        atomic.write_json(os.path.join(folder, SCREENSHOTS_MANIFEST), screenshots_manifest())



def test_single_upload_shows_top3(browser, live_url):
    browser.get(live_url + "/")
    dropzone = browser.find_element(By.ID, "dropzone")
    assert dropzone.is_displayed() == browser.javascript  # the enhancement appears only with JavaScript
    screenshot(browser, "index")
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLES[3]))
    if browser.javascript:
        assert len(browser.find_elements(By.CSS_SELECTOR, "#previews img")) == 1  # preview before submit
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    assert browser.find_element(By.CSS_SELECTOR, "dd.class-name").text in {p.stem for p in EXAMPLES}
    rows = browser.find_elements(By.CSS_SELECTOR, "table.probabilities.top3 tbody tr")
    assert len(rows) == 3
    result_url = browser.current_url
    browser.find_element(By.CSS_SELECTOR, "a.explain-link").click()  # Grad-CAM on demand, from the .h5
    figure = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "figure.gradcam img"))
    assert figure.is_displayed() and figure.get_attribute("src").startswith("data:image/png;base64,")
    assert (browser.current_url == result_url) == browser.javascript  # fetched in place, or its own page
    screenshot(browser, "result")


def test_batch_upload_gives_a_table(browser, live_url):
    browser.get(live_url + "/")
    browser.find_element(By.ID, "file").send_keys("\n".join(str(p) for p in EXAMPLES[:6]))
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "table.batch tr.classified")
    assert len(rows) == 6
    screenshot(browser, "batch")


def test_bad_file_gets_a_message(browser, live_url, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    browser.get(live_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
    assert "not an image" in alert.text
    assert browser.find_element(By.ID, "file")  # the form again, ready for another try


def test_example_click(browser, live_url):
    browser.get(live_url + "/")
    browser.find_element(By.CSS_SELECTOR, "ul.examples a").click()
    assert browser.find_element(By.CSS_SELECTOR, "dd.class-name").text


def test_classify_stays_above_the_fold_on_a_phone(browser, live_url):
    browser.set_window_size(390, 844)  # a common phone viewport, in CSS pixels
    try:
        browser.get(live_url + "/")
        browser.find_element(By.ID, "file").send_keys("\n".join(str(p) for p in EXAMPLES[:8]))  # previews with JS
        button = browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").rect
        viewport = browser.execute_script("return window.innerHeight") if browser.javascript else 844
        assert button["y"] + button["height"] <= viewport, (button, viewport)
        screenshot(browser, "phone")
    finally:
        browser.set_window_size(1100, 1300)


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("path", ["/api", "/model", "/"])
def test_no_page_scrolls_sideways(browser, live_url, path, width):
    browser.set_window_size(width, 900)
    try:
        browser.get(live_url + path)
        scrolling = browser.execute_script(  # boxes whose content is wider than they are
            "return [...document.querySelectorAll('pre, table, code')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 60))")
        sticking_out = browser.execute_script(  # elements past the right edge of the viewport
            "const width = document.documentElement.clientWidth;"
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > width + 1)"
            ".map(e => e.tagName + ' ' + e.textContent.slice(0, 40))")
        assert scrolling == [] and sticking_out == [], (scrolling, sticking_out)
    finally:
        browser.set_window_size(1100, 1300)
