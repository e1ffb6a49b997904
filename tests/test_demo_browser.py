"""The demo in a real headless browser: Debian's chromium driven by selenium through
/usr/bin/chromedriver.  The page is opened with every non-local host unresolvable, the sample
video and speech are uploaded, Dub is clicked and the dubbed video must appear and play.  A
screenshot is saved to tests/artifacts/demo.png for a person to look at (and the MARLIN tab's
to tests/artifacts/demo_marlin.png).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_demo_api import demo_config, make_demo_files

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parent / "artifacts" / "demo.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1500", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_demo_files(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def url(files):
    from lipsync.demo import serve

    app, address = serve(demo_config(files), block=False, quiet=True)
    yield address
    app.close()


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _requested_hosts(driver) -> set[str]:
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            address = message["params"].get("request", {}).get("url") or message["params"].get("url", "")
            parsed = urlparse(address)
            if parsed.scheme in ("http", "https", "ws", "wss"):
                hosts.add(parsed.netloc)
    return hosts


def test_upload_dub_and_watch_in_chromium(browser, url, files):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(css: str):
        return browser.find_elements(By.CSS_SELECTOR, css)

    browser.get(url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.25)
    wait.until(lambda d: find("#dub-button") and find("#dub-video input[type=file]"))
    assert browser.title == "MARLIN lip-sync"
    assert "Examples from" in browser.page_source and "sample.mp4" in browser.page_source

    find("#dub-button")[0].click()  # nothing uploaded yet: a clear message, and the page carries on
    wait.until(lambda d: "give a video or a photo" in d.find_element(By.TAG_NAME, "body").text)
    find(".toast-close")[0].click()
    wait.until(lambda d: "give a video or a photo" not in d.find_element(By.TAG_NAME, "body").text)

    find("#dub-video input[type=file]")[0].send_keys(str(files["video"]))
    find("#dub-audio input[type=file]")[0].send_keys(str(files["audio"]))
    wait.until(lambda d: find("#dub-video video") and "sample.wav" in d.find_element(By.ID, "dub-audio")
               .get_attribute("innerHTML"))
    find("#dub-button")[0].click()
    WebDriverWait(browser, 120, poll_frequency=0.5).until(lambda d: d.execute_script(
        "const v = document.querySelector('#dub-output video');"
        "return v !== null && v.src.includes('dubbed.mp4') && v.readyState >= 1;"))
    size = browser.execute_script("const v = document.querySelector('#dub-output video');"
                                  "return [v.videoWidth, v.videoHeight, v.duration];")
    assert size[:2] == [320, 240] and abs(size[2] - 0.48) < 0.05  # chromium decoded the dubbed mp4
    wait.until(lambda d: '"faces_found"' in d.find_element(By.ID, "dub-summary").text
               or "faces_found" in d.find_element(By.ID, "dub-summary").text)
    assert find("#dub-before-after video")
    browser.execute_script("window.scrollTo(0, 0);")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000

    # the MARLIN tab: masked input and reconstruction of the same clip, features to download
    next(b for b in find("button[role=tab]") if b.text.strip() == "MARLIN").click()
    wait.until(lambda d: find("#marlin-clip input[type=file]"))
    find("#marlin-clip input[type=file]")[0].send_keys(str(files["video"]))
    wait.until(lambda d: find("#marlin-clip video"))
    find("#marlin-button")[0].click()
    WebDriverWait(browser, 90, poll_frequency=0.5).until(lambda d: d.execute_script(
        "const i = document.querySelector('#marlin-grid img'); return i !== null && i.naturalWidth > 0;"))
    width = browser.execute_script("return document.querySelector('#marlin-grid img').naturalWidth;")
    assert width == 8 * 224  # eight frames of the vit_tiny clip, each 112 px shown at 224
    wait.until(lambda d: ".npy" in d.find_element(By.ID, "marlin-features").text)
    browser.execute_script("window.scrollTo(0, 0);")
    assert browser.save_screenshot(str(SCREENSHOT.with_name("demo_marlin.png")))

    port = urlparse(url).port
    hosts = _requested_hosts(browser)
    assert f"127.0.0.1:{port}" in hosts
    assert hosts <= {f"127.0.0.1:{port}"}, f"the page reached beyond this machine: {hosts}"
