"""A class on one server, in a real browser: two students (two browser contexts, two
workspaces) and the operator.  A trains; B sees none of it, and A's address with one
character changed is a new, empty workspace that says so; the operator's link opens the
Class page, which lists A's run; once published, B sees it on Compare and Predict but can
neither export nor delete it.  Screenshots of every step land in screenshots/class-*.png."""
import re

import pytest

from tests.test_browser_e2e import CHROMIUM, SHOTS
from tests.test_browser_e2e import start_server, stop_server

SECRET = "class-test-operator-secret"


@pytest.fixture
def class_server(tmp_path, ants_bees, mobilenet_file, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    monkeypatch.setenv("TRANSFERLAB_OPERATOR_SECRET", SECRET)
    proc, url = start_server(tmp_path)
    yield url, proc
    stop_server(proc)


@pytest.mark.slow
def test_two_students_and_the_operator_in_chromium(class_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    url, proc = class_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=90_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])

        def visitor():
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            return page

        def shoot(pg, name):
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(SHOTS / f"class-{name}.png"), full_page=True)

        def nav(pg, title):
            pg.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).first.click()

        a, b = visitor(), visitor()
        a.goto(f"{url}/train")
        expect(a.get_by_role("button", name="Start")).to_be_enabled()
        sid_a = re.search(r"sid=([A-Za-z0-9_-]{22})", a.url).group(1)
        a.get_by_role("button", name="Start").click()
        expect(a.get_by_text("best val accuracy")).to_be_visible(timeout=240_000)
        shoot(a, "1-student-a-trained")

        b.goto(f"{url}/compare")
        expect(b.get_by_text("No finished runs yet")).to_be_visible()
        nav(b, "Predict")
        expect(b.get_by_text("No trained run yet")).to_be_visible()
        shoot(b, "2-student-b-sees-nothing")
        # A guessed address: A's key with its last character changed is another, empty workspace.
        guess = sid_a[:-1] + ("A" if sid_a[-1] != "A" else "B")
        b.goto(f"{url}/compare?sid={guess}")
        expect(b.get_by_text("No finished runs yet")).to_be_visible()
        b.goto(f"{url}/compare?sid=0123456789ab")  # the old 12-digit kind of id: refused, and said
        expect(b.get_by_text("new, empty one was started")).to_be_visible()
        assert "0123456789ab" not in b.url
        shoot(b, "3-student-b-old-link")

        op = visitor()
        op.goto(f"{url}/?operator={SECRET}")
        expect(op.locator('[data-testid="stSidebarNav"]').get_by_text("Class (operator)")).to_be_visible()
        assert SECRET not in op.url  # the secret leaves the address at once
        nav(op, "Class (operator)")
        expect(op.get_by_role("heading", name="Class table")).to_be_visible()
        expect(op.get_by_text(re.compile(r"mobilenet_v2-imagenet-freeze_backbone")).first).to_be_attached()  # a grid cell
        shoot(op, "4-operator-class-page")
        op.get_by_label("Shared with the class (every visitor sees these on Compare and Predict)").click()
        op.get_by_role("option").first.click()
        op.keyboard.press("Escape")
        op.wait_for_timeout(2000)
        shoot(op, "5-operator-published")
        from core.runs.store import list_runs
        assert [r["published"] for r in list_runs(tmp_path / "runs")] == [True]

        b.goto(f"{url}/compare")
        expect(b.get_by_text("Exporting and deleting it are for its owner")).to_be_visible()
        assert not b.get_by_role("button", name="Delete this run").count()
        shoot(b, "6-student-b-sees-the-published-run")
        nav(b, "Predict")
        expect(b.get_by_text("Classes: ants, bees")).to_be_visible()
        assert not b.get_by_text("Take this model away").count()
        shoot(b, "7-student-b-predict")
        for pg in (a, b, op):
            assert "Traceback" not in pg.content()
        browser.close()
    proc.terminate()
    out = proc.communicate(timeout=30)[0].decode()
    assert f"?operator={SECRET}" in out  # printed once, to the terminal that started the server
    assert out.count("operator (teacher) view") == 1
