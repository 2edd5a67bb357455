"""The Inside page in Chromium: cost first, features on a click, the four sections, a hover
label with its photo, CJK class names; screenshots of each section go to screenshots/."""
import json
import shutil
import time

import pytest

from tests.conftest import make_run, owner_of_key
from tests.test_browser_e2e import CHROMIUM, SHOTS, start_server, stop_server

SID = "Inside-browser-test-00"  # a valid 22-character workspace key: the setup below is its saved one


def cjk_dataset(ants_bees, root):
    """A slice of the real photos with Chinese class names: 20 + 20 training, 10 + 10 validation."""
    for split, n in (("train", 20), ("val", 10)):
        for src, name in (("ants", "蚂蚁"), ("bees", "蜜蜂")):
            dest = root / split / name
            dest.mkdir(parents=True)
            for f in sorted((ants_bees / split / src).iterdir())[:n]:
                shutil.copy(f, dest / f.name)
    return root


@pytest.fixture
def inside_server(tmp_path, ants_bees, mobilenet_file, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from core.runs.store import write_json
    from ui import state as S
    data = cjk_dataset(ants_bees, tmp_path / "datasets" / "昆虫")
    monkeypatch.setenv("TRANSFERLAB_FEATURE_DISK", "0")  # the runs below train in this process: no disk cache
    owner = owner_of_key(SID)
    tuned = make_run(data, tmp_path / "runs", "tuned", arch="mobilenet_v2", weights="imagenet", freeze="none",
                     epochs=1, owner=owner)
    make_run(data, tmp_path / "runs", "scratch", arch="mobilenet_v2", weights="none", freeze="none", epochs=1,
             owner=owner)
    (tmp_path / "data" / "sessions").mkdir(parents=True)
    from core.access import owner_id
    write_json(tmp_path / "data" / "sessions" / f"{owner_id(SID)}.json",
               {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(data), S.ARCH: "mobilenet_v2", S.INSIDE_RUN: str(tuned)})
    monkeypatch.setenv("TRANSFERLAB_DATASET_ROOTS", str(tmp_path / "datasets"))
    monkeypatch.delenv("TRANSFERLAB_FEATURE_DISK")
    proc, url = start_server(tmp_path)
    yield url
    stop_server(proc)


@pytest.mark.slow
def test_inside_page_in_chromium(inside_server):
    from playwright.sync_api import expect, sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=300_000)
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(300_000)

        def section(title, name):
            page.get_by_role("heading", name=title).evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)  # charts finish drawing
            page.screenshot(path=str(SHOTS / f"inside-{name}.png"))

        page.goto(f"{inside_server}/inside?sid={SID}")
        expect(page.get_by_text("are not computed yet for")).to_be_visible()
        expect(page.get_by_text("蚂蚁, 蜜蜂").first).to_be_visible()
        section("1 · Feature space: are the classes apart before training?", "0-cost")
        t0 = time.perf_counter()
        page.get_by_role("button", name="Compute the features").click()
        expect(page.get_by_text("k-NN accuracy (k=5)").nth(2)).to_be_visible()
        timings["extract_and_draw_s"] = round(time.perf_counter() - t0, 1)
        section("1 · Feature space: are the classes apart before training?", "1-feature-space")

        # Hover the dots of the first map until vega's tooltip shows one photo.
        chart = page.locator('[data-testid="stVegaLiteChart"]').first
        box = chart.bounding_box()
        hovered = False
        for fy in (0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55):
            for fx in [i / 40 for i in range(4, 37)]:
                page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"] * 0.8)
                tip = page.locator("#vg-tooltip-element")
                if tip.count() and tip.is_visible() and tip.locator("img").count() \
                        and any(c in tip.inner_text() for c in ("蚂蚁", "蜜蜂")):
                    hovered = True
                    break
            if hovered:
                break
        page.screenshot(path=str(SHOTS / "inside-1-hover.png"))
        assert hovered, "no tooltip with a photo appeared over the map"
        page.mouse.move(0, 0)

        section("2 · First-layer filters: what the network looks for first", "2-filters")
        section("3 · Feature maps: one photo, shallow to deep", "3-feature-maps")
        expect(page.get_by_text("Grad-CAM of tuned")).to_be_visible()
        page.get_by_role("button", name="Measure the similarity").click()
        expect(page.get_by_text("similarity before/after (linear CKA)")).to_be_visible()
        section("4 · What fine-tuning changed", "4-what-changed")
        page.screenshot(path=str(SHOTS / "inside-full.png"), full_page=True)

        # Everything cached now: a fresh load draws the three maps without running a body.
        t0 = time.perf_counter()
        page.reload()
        expect(page.get_by_text("k-NN accuracy (k=5)").nth(2)).to_be_visible()
        timings["cached_draw_s"] = round(time.perf_counter() - t0, 1)
        assert not page.get_by_text("are not computed yet for").count()
        browser.close()
    print(json.dumps(timings))
    (SHOTS / "inside-timings.json").write_text(json.dumps(timings))
    assert timings["cached_draw_s"] <= 10
