"""End to end in a real browser: streamlit run + headless Chromium (Debian's) driven by
Playwright.  Trains on the demo photos, finds a learning rate, opens Compare, classifies
an uploaded photo, and saves a screenshot of every page to screenshots/."""
import os
import re
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


def start_server(tmp_path) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` with runs and data under ``tmp_path``; (process, url) once healthy."""
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
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def server(tmp_path, ants_bees, mobilenet_file):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    proc, url = start_server(tmp_path)
    yield url
    stop_server(proc)


def _saved_configs(runs_dir: Path) -> list[dict]:
    from core.runs.store import list_runs
    return [r["config"] for r in list_runs(runs_dir)]


@pytest.mark.slow
def test_whole_flow_with_a_reload_and_a_second_tab_in_chromium(server, ants_bees, tmp_path):
    """Choices made on Model and Train survive a reload and are what the run used; a second
    tab trains at the same time through the queue; every page is screenshotted."""
    from playwright.sync_api import expect, sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=90_000)  # a cold first start imports torch and scans the photos
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        sidebar = page.locator('[data-testid="stSidebar"]')

        def shoot(pg, name):
            pg.wait_for_timeout(1500)  # let charts finish drawing
            pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        def goto(title):
            page.get_by_role("link", name=title).first.click()

        def set_number(pg, label, value):
            box = pg.get_by_label(label, exact=True)  # "Epochs", not "Head-only epochs first"
            box.fill(str(value))
            box.press("Enter")

        # First visit of a fresh server straight to a deep link: app.py must still run
        # (sidebar with the device, our navigation), not Streamlit's pages/ folder mode.
        page.goto(f"{server}/model")
        expect(page.get_by_text("Device:")).to_be_visible()
        expect(page.get_by_text("Trainable share")).to_be_visible()
        assert "Data" in page.locator('[data-testid="stSidebarNav"]').inner_text()

        page.goto(server)
        expect(page.get_by_text("245 training and 153 validation")).to_be_visible()
        shoot(page, "1-data")

        goto("Model")
        expect(page.get_by_text("Trainable share")).to_be_visible()
        set_number(page, "Hidden layer units in the new head (0: a single linear layer)", 64)
        expect(sidebar.get_by_text("head 64 hidden")).to_be_visible()  # the sidebar shows this click's value
        shoot(page, "2-model")

        goto("Train")
        set_number(page, "Epochs", 3)
        expect(page.get_by_text("head 64 hidden").first).to_be_visible()
        page.reload()  # a refresh keeps the setup
        expect(page.get_by_label("Epochs", exact=True)).to_have_value("3")
        expect(sidebar.get_by_text("head 64 hidden")).to_be_visible()

        # A second tab (its own session, the defaults) presses Start at the same time.
        other = browser.new_page(viewport={"width": 1400, "height": 1000})
        other.set_default_timeout(60_000)
        other.goto(f"{server}/train")
        expect(other.get_by_role("button", name="Start")).to_be_enabled()
        page.get_by_role("button", name="Start").click()
        other.get_by_role("button", name="Start").click()
        for pg in (page, other):
            expect(pg.get_by_text("best val accuracy")).to_be_visible(timeout=240_000)
            expect(pg.get_by_role("button", name="Start")).to_be_enabled()  # not left greyed out after the run
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        assert not other.locator('[data-testid="stAlertContentError"]').count()
        shoot(page, "3-train")
        shoot(other, "3b-train-second-tab")
        configs = _saved_configs(tmp_path / "runs")
        assert sorted((c["hidden"], c["train"]["epochs"]) for c in configs) == [(0, 5), (64, 3)]

        # The learning-rate finder: the features of that run are cached, so the head's sweep
        # takes seconds; its suggestion goes into the Learning rate input with one click.
        page.get_by_role("button", name="Find a learning rate").click()
        expect(page.get_by_text("Suggested").first).to_be_visible(timeout=120_000)
        use = page.get_by_role("button", name=re.compile(r"Use \d"))
        value = re.search(r"Use (\S+)", use.inner_text()).group(1)
        use.click()
        expect(page.get_by_label("Learning rate", exact=True)).to_have_value(f"{float(value):.5f}")
        page.set_viewport_size({"width": 1400, "height": 2400})  # the page scrolls inside Streamlit's container
        shoot(page, "3c-lr-finder")
        page.set_viewport_size({"width": 1400, "height": 1000})

        goto("Compare")
        expect(page.get_by_text("Validation accuracy of the saved weights")).to_be_visible(timeout=120_000)
        shoot(page, "4-compare")

        goto("Predict")
        bee = sorted((ants_bees / "val" / "bees").iterdir())[0]
        page.locator("input[type=file]").first.set_input_files(str(bee))
        # Predict opens on this tab's own run (hidden 64, 3 epochs): its answer is what it is.
        headline = page.locator("h3").filter(has_text=re.compile(r"^(ants|bees)"))
        expect(headline).to_be_visible(timeout=120_000)
        expect(page.get_by_text("confident")).to_be_visible()
        shoot(page, "5-predict")
        assert "Traceback" not in page.content()
        browser.close()
