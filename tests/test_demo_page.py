"""The demo page in a real headless Chromium (Debian's chromium and chromium-driver, driven
by selenium) against the shared ``shop`` worker: photo search, keyword search, live
recommendations, and the screenshot the README shows (written to docs/img/demo.png when
``VR_UPDATE_SCREENSHOT=1``; otherwise to the test's temporary folder, so a test run leaves the
checkout as it was).

A machine without the browser fails here loudly: infra/setup.sh installs it.
"""
import base64
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "demo.png"
# The worker answers in seconds on an idle machine; a shared 2-core host can be much slower.
WAIT_S = 120


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        # Headless as root on a closed network: no sandbox, no GPU, and nothing that phones home.
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def page(shop, browser) -> WebDriver:
    settings, _, _ = shop
    browser.get(f"http://127.0.0.1:{settings.web_port}/")
    wait_for(browser, lambda _: "products" in browser.find_element(By.ID, "health").text)
    return browser


def wait_for(browser: WebDriver, condition, timeout_s: float = WAIT_S):
    return WebDriverWait(browser, timeout_s, poll_frequency=0.2).until(condition)


def card_ids(browser: WebDriver, grid_id: str) -> list[str]:
    # Read in one script: live updates replace a grid's cards at any moment.
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(card => card.dataset.productId)", f"#{grid_id} .card")


def test_uploading_a_catalog_photo_shows_that_product_first(page, catalog, tmp_path):
    product = catalog[21]
    photo = tmp_path / "photo.png"
    photo.write_bytes(base64.b64decode(product.listing()["image_b64"]))
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    page.find_element(By.CSS_SELECTOR, "#photo-form button[type=submit]").click()
    wait_for(page, lambda _: card_ids(page, "photo-results"))
    assert card_ids(page, "photo-results")[0] == product.product_id
    first = page.find_element(By.CSS_SELECTOR, "#photo-results .card")
    assert first.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/png;base64,")
    assert product.title in first.text and "score 1.000" in first.text


def test_keyword_search_renders_matching_products(page):
    search = page.find_element(By.ID, "keywords-input")
    search.send_keys("running sneaker")
    page.find_element(By.CSS_SELECTOR, "#keywords-form button[type=submit]").click()
    wait_for(page, lambda _: card_ids(page, "keyword-results"))
    titles = [card.text for card in page.find_elements(By.CSS_SELECTOR, "#keyword-results .card")]
    assert sum("Sneaker" in title for title in titles[:5]) >= 4, titles
    assert "products matching" in page.find_element(By.ID, "keywords-status").text


def test_browsing_a_category_shows_only_that_category(page):
    wait_for(page, lambda _: len(page.find_elements(By.CSS_SELECTOR, "#category-select option")) > 1)
    page.find_element(By.CSS_SELECTOR, "#category-select option[value='Bag']").click()
    wait_for(page, lambda _: "in Bag" in page.find_element(By.ID, "browse-status").text)
    cards = page.find_elements(By.CSS_SELECTOR, "#browse-results .card")
    assert cards and all("Bag" in card.text for card in cards)


def test_a_played_session_updates_the_recommendations_live_and_the_page_is_screenshot(page, tmp_path):
    user = page.find_element(By.ID, "user-input")
    user.clear()
    user.send_keys("page-visitor")
    page.find_element(By.CSS_SELECTOR, "#live-form button[type=submit]").click()
    wait_for(page, lambda _: "waiting for new actions" in page.find_element(By.ID, "live-status").text)
    page.find_element(By.ID, "play-button").click()
    # The status names the interests once a list computed from this session's actions arrives.
    wait_for(page, lambda _: "updated" in page.find_element(By.ID, "live-status").text)
    wait_for(page, lambda _: page.find_element(By.ID, "play-button").is_enabled())
    status = page.find_element(By.ID, "live-status").text
    assert status.startswith("page-visitor: interests"), status
    assert len(page.find_elements(By.CSS_SELECTOR, "#played-actions li")) == 8
    assert card_ids(page, "live-results")

    screenshot = README_SCREENSHOT if os.environ.get("VR_UPDATE_SCREENSHOT") == "1" else tmp_path / "demo.png"
    # The whole page in one picture: a viewport as tall as the document, scrolled to the top.
    document_height, frame_height = page.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    page.set_window_size(1400, document_height + frame_height)
    page.execute_script("window.scrollTo(0, 0)")
    assert page.save_screenshot(str(screenshot))
