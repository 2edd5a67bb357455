"""End to end in a real browser: streamlit run + headless Chromium (Debian's) driven by
Playwright.  Trains on the demo photos, opens Compare, classifies an uploaded photo,
and saves a screenshot of every page to screenshots/."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "screenshots"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, ants_bees, mobilenet_file):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    port = free_port()
    env = {**os.environ, "TRANSFERLAB_RUNS": str(tmp_path / "runs"), "TRANSFERLAB_DATA": str(tmp_path / "data"),
           "TRANSFERLAB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(10)


def test_train_compare_predict_in_chromium(server, ants_bees):
    from playwright.sync_api import expect, sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=90_000)  # a cold first start imports torch and scans the photos
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        def shoot(name):
            page.wait_for_timeout(1500)  # let charts finish drawing
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        def goto(title):
            page.get_by_role("link", name=title).first.click()

        # First visit of a fresh server straight to a deep link: app.py must still run
        # (sidebar with the device, our navigation), not Streamlit's pages/ folder mode.
        page.goto(f"{server}/model")
        expect(page.get_by_text("Device:")).to_be_visible()
        expect(page.get_by_text("Trainable share")).to_be_visible()
        assert "Data" in page.locator('[data-testid="stSidebarNav"]').inner_text()

        page.goto(server)
        expect(page.get_by_text("245 training and 153 validation")).to_be_visible()
        shoot("1-data")

        goto("Model")
        expect(page.get_by_text("Trainable share")).to_be_visible()
        shoot("2-model")

        goto("Train")
        epochs = page.get_by_label("Epochs")
        epochs.fill("3")
        epochs.press("Enter")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text("best val accuracy")).to_be_visible(timeout=240_000)
        expect(page.get_by_role("button", name="Start")).to_be_enabled()  # not left greyed out after the run
        shoot("3-train")

        goto("Compare")
        expect(page.get_by_text("Validation accuracy of the saved weights")).to_be_visible(timeout=120_000)
        shoot("4-compare")

        goto("Predict")
        bee = sorted((ants_bees / "val" / "bees").iterdir())[0]
        page.locator("input[type=file]").first.set_input_files(str(bee))
        headline = page.locator("h3").filter(has_text="bees")
        expect(headline).to_be_visible(timeout=120_000)
        assert headline.first.inner_text().strip().startswith("bees")
        shoot("5-predict")
        browser.close()
