"""Make your own classes in a real browser (Debian's Chromium via Playwright): two classes
from ants/bees photos uploaded through the page, one broken file refused with its reason,
train, predict, restart the server and find the dataset again.  Screenshots of the Data
page go to screenshots/."""
import re

import pytest

from tests.test_browser_e2e import CHROMIUM, SHOTS, start_server, stop_server


@pytest.mark.slow
def test_own_classes_in_chromium_train_predict_and_a_restart(ants_bees, mobilenet_file, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from playwright.sync_api import expect, sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=90_000)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((ants_bees / "train/ants").iterdir().__next__().read_bytes()[:3000])  # cut short
    ants = sorted((ants_bees / "train/ants").iterdir())[:5]
    bees = sorted((ants_bees / "train/bees").iterdir())[:5]
    proc, url = start_server(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            def type_and_click(label, value, button):
                box = page.get_by_label(label, exact=True)
                box.fill(value)
                box.press("Enter")  # stores the text before the click reads it
                page.wait_for_timeout(300)
                page.get_by_role("button", name=button).click()

            def upload(class_name, paths):
                box = page.locator('[data-testid="stFileUploader"]').filter(has_text=f"Add photos to {class_name}")
                box.locator("input[type=file]").set_input_files([str(x) for x in paths])

            def shoot(name):
                page.set_viewport_size({"width": 1400, "height": 2600})  # the page scrolls inside Streamlit's container
                page.wait_for_timeout(1500)
                page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
                page.set_viewport_size({"width": 1400, "height": 1000})

            page.goto(url)
            page.get_by_text("Make your own classes").click()
            type_and_click("New dataset name", "Insects", "Create dataset")
            expect(page.get_by_text("add at least 2 classes (it has 0)")).to_be_visible()
            type_and_click("New class name", "ants", "Add class")
            expect(page.get_by_text("Add photos to ants")).to_be_visible()
            upload("ants", ants + [broken])
            expect(page.get_by_text("Added 5 photos to ants")).to_be_visible()
            expect(page.get_by_text("Refused broken.jpg: truncated or damaged image data")).to_be_visible()
            shoot("6a-own-classes-refused")
            type_and_click("New class name", "пчёлы", "Add class")
            expect(page.get_by_text("class 'пчёлы' needs 5 more photos")).to_be_visible()
            upload("пчёлы", bees)
            expect(page.get_by_text("Added 5 photos to пчёлы")).to_be_visible()
            expect(page.get_by_text("8 training and 2 validation")).to_be_visible()  # ready: selected
            expect(page.locator('[data-testid="stSidebar"]').get_by_text("Insects")).to_be_visible()
            shoot("6-own-classes")

            page.get_by_role("link", name="Train").first.click()
            box = page.get_by_label("Epochs", exact=True)
            box.fill("2")
            box.press("Enter")
            expect(page.get_by_text("data: Insects (2 classes)")).to_be_visible()
            page.get_by_role("button", name="Start").click()
            expect(page.get_by_text("best val accuracy")).to_be_visible(timeout=180_000)

            page.get_by_role("link", name="Predict").first.click()
            expect(page.get_by_text("Classes: ants, пчёлы")).to_be_visible()
            page.locator("input[type=file]").first.set_input_files(str(sorted((ants_bees / "val/bees").iterdir())[0]))
            expect(page.locator("h3").filter(has_text=re.compile(r"^(ants|пчёлы)"))).to_be_visible(timeout=120_000)
            sid = re.search(r"sid=([A-Za-z0-9_-]{22})", page.url).group(1)
            assert "Traceback" not in page.content()

            # A server restart: the same address brings the dataset back, selected and ready.
            stop_server(proc)
            proc, url = start_server(tmp_path)
            page.goto(f"{url}/?sid={sid}")
            expect(page.get_by_text("8 training and 2 validation")).to_be_visible()
            expect(page.get_by_role("combobox", name="Your datasets")).to_have_value("Insects — 2 classes, 10 photos")
            expect(page.get_by_text("Add photos to пчёлы")).to_be_visible()
            assert not page.locator('[data-testid="stAlertContentError"]').count()
            shoot("6b-own-classes-after-restart")
            browser.close()
    finally:
        stop_server(proc)
