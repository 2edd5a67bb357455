"""What an idle open tab costs the server (a script, not a test).

Starts `streamlit run app.py` (fresh temporary runs/ and data/), then, one at a time, in
headless Chromium:

  1. a Train tab, fully drawn, nothing training;
  2. a Data tab, fully drawn (ants/bees summary visible);
  3. a Train tab showing a finished 1-epoch job (Epochs set to 1, Start, result shown);
  4. no tab at all (the server alone), for reference;

and for each measures the CPU time (utime+stime from /proc/<pid>/stat, in clock ticks) used
over --seconds (default 30) by the server's process tree only: the streamlit process and
all its children.  Chromium and this script are not counted (they are shown apart, for
information).  Result in % of one core.  Websocket frames between the tab and the server
during the window are counted too: an idle tab should exchange (almost) none.

    python bench/idle_cpu.py [--seconds 30] [--no-finished] [--port P] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom as C  # noqa: E402  (same folder: server, /proc and browser helpers)


async def measure(server_pid: int, seconds: float, frames: dict | None = None) -> dict:
    """CPU of the server tree (and, apart, of this script + Chromium) over `seconds`."""
    server_t, client_t = C.TreeTicks(), C.TreeTicks()

    def snap():
        server = C.process_tree(server_pid)
        client = [p for p in C.process_tree(os.getpid()) if p not in set(server)]
        return server_t.update(server), client_t.update(client), len(server)
    s0, c0, n0 = snap()
    b0, tot0 = C.machine_ticks()
    f0 = dict(frames) if frames is not None else None
    t0 = time.time()
    nmax = n0
    while time.time() - t0 < seconds:
        await asyncio.sleep(min(1.0, max(0.0, seconds - (time.time() - t0))))
        _, _, n = snap()
        nmax = max(nmax, n)
    s1, c1, n1 = snap()
    b1, tot1 = C.machine_ticks()
    dt = time.time() - t0
    core = lambda ticks: 100.0 * ticks / C.CLK_TCK / dt  # noqa: E731  % of one core
    out = {"seconds": round(dt, 1), "server_ticks": s1 - s0, "server_pct_of_core": round(core(s1 - s0), 2),
           "bench_and_chromium_pct_of_core": round(core(c1 - c0), 2),
           "machine_busy_pct_of_all_cores": round(100.0 * (b1 - b0) / max(1, tot1 - tot0), 1),
           "server_processes": nmax, "server_rss_gib": round(C.tree_rss(server_pid) / 2**30, 3)}
    if frames is not None:
        out["ws_frames_from_server"] = frames["received"] - f0["received"]
        out["ws_frames_to_server"] = frames["sent"] - f0["sent"]
        out["ws_frames_since_open"] = frames["received"] + frames["sent"]  # shows the counter works
    return out


def count_frames(page) -> dict:
    frames = {"received": 0, "sent": 0}

    def on_ws(ws):
        ws.on("framereceived", lambda _: frames.__setitem__("received", frames["received"] + 1))
        ws.on("framesent", lambda _: frames.__setitem__("sent", frames["sent"] + 1))
    page.on("websocket", on_ws)
    return frames


async def new_page(browser, timeout_s: float = 120):
    ctx = await browser.new_context(viewport=C.VIEWPORT)
    page = await ctx.new_page()
    page.set_default_timeout(timeout_s * 1000)
    return ctx, page, count_frames(page)


async def train_tab(browser, url):
    ctx, page, frames = await new_page(browser)
    await page.goto(f"{url}/train", wait_until="domcontentloaded")
    start = page.get_by_role("button", name="Start").first
    await start.wait_for(state="visible")
    await page.get_by_text("Press Start to train").first.wait_for(state="visible")
    for _ in range(300):
        if await start.is_enabled():
            break
        await asyncio.sleep(0.2)
    await C.settle(page)
    return ctx, page, frames


async def data_tab(browser, url):
    ctx, page, frames = await new_page(browser)
    await page.goto(url, wait_until="domcontentloaded")
    await page.get_by_text(C.DATA_TEXT).first.wait_for(state="visible")
    await C.settle(page)
    return ctx, page, frames


async def finished_train_tab(browser, url):
    ctx, page, frames = await train_tab(browser, url)
    epochs = page.get_by_label("Epochs")
    await epochs.fill("1")
    await epochs.press("Enter")
    await asyncio.sleep(1)
    await C.settle(page)
    value = await epochs.input_value()
    t0 = time.time()
    await page.get_by_role("button", name="Start").first.click()
    r = await page.evaluate(C.WAIT_JS, {"timeoutMs": 300_000, "pollMs": 300})
    info = {"epochs_field": value, "run_status": r["status"], "run_text": r["text"], "run_s": round(time.time() - t0, 1)}
    if r["status"] != "done":
        raise RuntimeError(f"the 1-epoch run did not finish: {info}")
    start = page.get_by_role("button", name="Start").first
    for _ in range(100):  # the page reruns once more when the job ends: Start comes back
        if await start.is_enabled():
            break
        await asyncio.sleep(0.2)
    await C.settle(page)
    return ctx, page, frames, info


async def run(args) -> dict:
    from playwright.async_api import async_playwright
    res: dict = {"method": (
        f"CPU = utime+stime from /proc/<pid>/stat of the streamlit process and all its descendants, read at the "
        f"start and end of the window (and every 1 s, so children that exit are still counted), in clock ticks "
        f"(SC_CLK_TCK={C.CLK_TCK}); % of one core = ticks / CLK_TCK / window seconds * 100. The tab is drawn, "
        f"the page's script run has ended and {args.settle:g} s have passed before the window opens. "
        f"Chromium (renderers included) and this script are not counted."), "scenarios": {}}
    res["machine_before"] = C.wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    server = C.Server(args.port)
    failed = False
    try:
        res["server_start_s"] = round(server.start(), 1)
        async with async_playwright() as p:
            browser = await C.launch_browser(p)
            try:
                scenarios = [("idle Train tab", train_tab), ("idle Data tab", data_tab)]
                if not args.no_finished:
                    scenarios.append(("idle Train tab with a finished 1-epoch job", finished_train_tab))
                for name, opener in scenarios:
                    print(f"  {name}: opening ...", flush=True)
                    try:
                        got = await asyncio.wait_for(opener(browser, server.url), 400)
                    except Exception as e:  # noqa: BLE001
                        res["scenarios"][name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
                        failed = True
                        print(f"    FAILED: {res['scenarios'][name]['error']}", flush=True)
                        continue
                    ctx, page, frames, *extra = got
                    await asyncio.sleep(args.settle)
                    print(f"  {name}: measuring {args.seconds:g} s ...", flush=True)
                    m = await measure(server.pid, args.seconds, frames)
                    if extra:
                        m.update(extra[0])
                    errs = await page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]').count()
                    m["errors_on_page"] = errs
                    failed |= bool(errs)
                    res["scenarios"][name] = m
                    await ctx.close()
                await asyncio.sleep(args.settle)
                print(f"  no tab open (server alone): measuring {args.seconds:g} s ...", flush=True)
                res["scenarios"]["no tab open (server alone)"] = await measure(server.pid, args.seconds)
            finally:
                await browser.close()
    except Exception as e:  # noqa: BLE001
        res["fatal"] = f"{type(e).__name__}: {str(e)[:2000]}"
        failed = True
    finally:
        res["server_log_problem_lines"] = server.log_problems()[-40:]
        if failed or res["server_log_problem_lines"]:
            res["server_log_tail"] = server.log_tail(60)
            res["server_log"] = str(server.log_path)
        server.stop(keep_log="server_log" in res)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30, help="length of each idle window")
    ap.add_argument("--settle", type=float, default=3, help="seconds between the drawn page and the window")
    ap.add_argument("--no-finished", action="store_true", help="skip the Train tab with a finished 1-epoch job")
    ap.add_argument("--port", type=int)
    ap.add_argument("--json", help="write the numbers to this JSON file")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="first wait up to this many seconds for the machine to be under 25%% busy (0: don't)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = C.machine_info()
    C.print_machine(info)
    print(f"server: streamlit run {C.ROOT / 'app.py'} on 127.0.0.1, fresh temporary runs/ and data/\n", flush=True)
    res = asyncio.run(run(args))
    res["machine"] = info
    print()
    q = res.get("machine_before")
    if q:
        print(f"machine before the start: {q['busy_pct']} % busy over 3 s, loadavg {' '.join(q['loadavg'])}")
    if res.get("fatal"):
        print(f"FATAL: {res['fatal']}")
    for name, m in res["scenarios"].items():
        if "error" in m:
            print(f"{name}: FAILED — {m['error']}")
            continue
        frames = (f", websocket frames in the window {m['ws_frames_from_server']} from / {m['ws_frames_to_server']} to "
                  f"the server ({m['ws_frames_since_open']} since the tab opened)"
                  if "ws_frames_from_server" in m else "")
        print(f"{name}: {m['server_pct_of_core']:.2f}% of a core over {m['seconds']:.0f} s "
              f"({m['server_ticks']} ticks; server RSS {m['server_rss_gib']:.2f} GiB, {m['server_processes']} process(es)"
              f"{frames}; not counted: this script + Chromium {m['bench_and_chromium_pct_of_core']:.1f}% of a core; "
              f"machine {m['machine_busy_pct_of_all_cores']:.1f}% busy)")
        if "run_text" in m:
            print(f"    the finished job (Epochs field '{m['epochs_field']}', {m['run_s']} s): {m['run_text']}")
        if m.get("errors_on_page"):
            print(f"    {m['errors_on_page']} error element(s) on the page")
    print(f"method: {res['method']}")
    C.print_server_log(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"JSON written to {args.json}")
    return 1 if res.get("fatal") or any("error" in m for m in res["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
