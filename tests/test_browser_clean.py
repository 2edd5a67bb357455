"""The Clean page in Chromium, on the noisy ants/bees offered as a server folder: the cost
first, the audit on a click, a relabel, the bulk "drop the val copy of every leak", undo,
the one-click retrain before and after, Compare's word on the changed val set and the
Data page's cleaned dataset.  Screenshots go to screenshots/clean-*.png."""
import json
import re
import time

import pytest

from tests.conftest import owner_of_key
from tests.test_browser_e2e import CHROMIUM, SHOTS, start_server, stop_server

SID = "Clean-browser-test-000"  # a valid 22-character workspace key: the setup below is its saved one


@pytest.fixture
def clean_server(tmp_path, ants_bees, mobilenet_file, fashion_folder, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from core.access import owner_id
    from core.runs.store import write_json
    from tests.noisy_data import build_noisy
    from ui import state as S
    planted = build_noisy(ants_bees, fashion_folder, tmp_path / "datasets" / "noisy-ants-bees")
    (tmp_path / "data" / "sessions").mkdir(parents=True)
    write_json(tmp_path / "data" / "sessions" / f"{owner_id(SID)}.json",
               {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(planted.root.resolve()), S.ARCH: "mobilenet_v2",
                S.TRAIN_CFG: {**S.SETUP_DEFAULTS[S.TRAIN_CFG], "epochs": 3}})
    monkeypatch.setenv("TRANSFERLAB_DATASET_ROOTS", str(tmp_path / "datasets"))
    proc, url = start_server(tmp_path)
    yield url, planted, tmp_path
    stop_server(proc)


@pytest.mark.slow
def test_clean_page_in_chromium(clean_server):
    from playwright.sync_api import expect, sync_playwright
    url, planted, tmp_path = clean_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=300_000)
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.set_default_timeout(300_000)
        main = page.locator('[data-testid="stMain"]')

        def shoot(name, at=None):
            """The viewport (Streamlit scrolls inside its own container), from ``at`` (a locator) down."""
            if at is not None:
                at.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(SHOTS / f"clean-{name}.png"))

        page.goto(f"{url}/clean?sid={SID}")
        audit = page.get_by_role("button", name="Audit 406 photos")
        expect(audit).to_be_visible()
        expect(page.get_by_text("Your first decision makes a cleaned dataset")).to_be_visible()
        shoot("0-cost")
        t0 = time.perf_counter()
        audit.click()
        expect(page.get_by_text(re.compile(r"Reviewed 0 of \d+"))).to_be_visible()
        timings["audit_cold_s"] = round(time.perf_counter() - t0, 1)
        expect(main.get_by_text("Train/val leaks")).to_be_visible()
        assert not page.get_by_role("button", name="Audit 406 photos").count()  # the cost note left with its button
        shoot("1-audit")
        shoot("1b-label-issues", page.get_by_role("tab", name="Label issues (44)"))

        # One photo relabelled to its suggestion: the cleaned dataset is made, the progress moves.
        main.locator('[data-testid="stButtonGroup"]').first.get_by_role("radio").first.click()
        expect(page.get_by_text(re.compile(r"Reviewed 1 of \d+"))).to_be_visible()
        expect(page.get_by_text("Decisions go to")).to_be_visible()

        page.get_by_role("tab", name="Leaks (5)").click()
        expect(page.get_by_text("Drop the val copy of every leak (5)")).to_be_visible()
        page.get_by_role("button", name="Drop the val copy of every leak (5)").click()
        expect(page.get_by_text(re.compile(r"Reviewed 6 of \d+"))).to_be_visible()
        page.get_by_role("tab", name="Leaks (5)").click()
        shoot("2-leaks", page.get_by_role("tab", name="Leaks (5)"))

        page.get_by_role("button", name=re.compile("^Undo: dropped the val copy")).click()
        expect(page.get_by_text(re.compile(r"Reviewed 1 of \d+"))).to_be_visible()
        page.get_by_role("tab", name="Leaks (5)").click()
        page.get_by_role("button", name="Drop the val copy of every leak (5)").click()
        expect(page.get_by_text(re.compile(r"Reviewed 6 of \d+"))).to_be_visible()
        outliers = page.get_by_role("tab", name=re.compile(r"Outliers \(\d+\)"))
        outliers.click()
        shoot("3-outliers", outliers)
        shoot("3b-retrain", page.get_by_role("heading", name="The cleaned dataset"))

        # One click: before and after, through the queue, on the Train page.
        t0 = time.perf_counter()
        page.get_by_role("button", name="Retrain on the cleaned dataset").click()
        expect(page.get_by_role("heading", name=re.compile("Before and after cleaning"))).to_be_visible()
        expect(page.get_by_text("after cleaning: ").first).to_be_visible()
        expect(page.get_by_role("button", name="Start")).to_be_enabled()
        timings["retrain_both_s"] = round(time.perf_counter() - t0, 1)
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        shoot("4-train", page.get_by_role("heading", name=re.compile("Before and after cleaning")))

        page.get_by_role("link", name="Compare the runs").click()
        expect(page.get_by_text("different sets of photos")).to_be_visible()
        page.get_by_role("button", name=re.compile("Score every run on set")).click()
        expect(page.get_by_text(re.compile("trained on a cleaned dataset"))).to_be_visible()
        page.get_by_role("heading", name="Cleaning and validation photos").evaluate(
            "e => e.scrollIntoView({block: 'start'})")
        shoot("5-compare")

        page.get_by_role("link", name="Data").first.click()
        expect(page.get_by_text(re.compile(r"1 photo excluded|5 photos excluded"))).to_be_visible()
        expect(page.get_by_text("153 validation images")).to_be_visible()
        shoot("6-data")
        browser.close()
    from core.runs.store import list_runs
    configs = {r["name"].split("-")[1]: r["config"] for r in list_runs(tmp_path / "runs")}
    assert set(configs) == {"cleaned", "uncleaned"}
    assert configs["cleaned"]["cleaned"]["excluded"] == 5 and configs["uncleaned"]["cleaned"] is None
    print("\n" + json.dumps(timings))
    assert owner_of_key(SID)  # the workspace the setup was saved for
