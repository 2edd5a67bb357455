"""Classroom load benchmark (a script, not a test): K students press Start at once.

For each K: start a fresh `streamlit run app.py` (fresh, empty temporary runs/ and data/
directories, so the first job really reads the photos and extracts features), open K
tabs of headless Chromium on the Train page, press Start in all of them as close to
simultaneously as possible, and report

  runs finished, errors, accuracy of each run, the slowest and median wait from a tab's
  click to its result, how long a fresh tab takes to draw the Data page meanwhile, and the
  peak memory of the server's process tree (streamlit and all its children).

Target on the 2-core project machine, defaults (ants/bees, MobileNetV2 frozen, 5 epochs):
K=8 — all finish with no error and >= 94 % each, slowest <= 60 s, fresh tab <= 10 s,
peak <= 3 GiB.

    python bench/classroom.py --tabs 8 [--tabs 1 --tabs 20] [--port P] [--json out.json]

Everything has a bounded timeout (--timeout per K, default 600 s); the server is always
shut down.  Only 127.0.0.1 is contacted.  Note: the browser runs on the same cores as the
server here, so the numbers are pessimistic compared with a real classroom.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions"]
VIEWPORT = {"width": 1000, "height": 700}
DATA_TEXT = "245 training and 153 validation"
TARGETS = {"min_acc": 0.94, "slowest_s": 60.0, "fresh_tab_s": 10.0, "peak_gib": 3.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- machine ---------------------
def machine_info() -> dict:
    model, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "?":
                model = val.strip()
            elif key == "flags" and not flags:
                flags = set(val.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": {f: f in flags for f in wanted}, "cores_online": os.cpu_count(),
            "cores_usable": usable, "mem_gib": round(mem_gib, 1) if mem_gib else None,
            "python": platform.python_version(), "torch": version("torch"), "streamlit": version("streamlit"),
            "playwright": version("playwright")}


def print_machine(info: dict) -> None:
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["cpu_flags"].items())
    print(f"CPU: {info['cpu_model']}")
    print(f"flags: {flags}")
    print(f"cores: {info['cores_usable']} usable ({info['cores_online']} online), RAM {info['mem_gib']} GiB")
    print(f"python {info['python']}, torch {info['torch']}, streamlit {info['streamlit']}, "
          f"playwright {info['playwright']}")


# ---------------------------------------------------------------- /proc -----------------------
def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state, field 3)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and all its descendants (from the ppid field of every /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> int:
    return sum(rss_bytes(p) for p in process_tree(root))


def cpu_ticks(pid: int, with_children: bool = False) -> int | None:
    """utime+stime (+cutime+cstime: reaped children) of one process, in clock ticks."""
    f = _stat_fields(pid)
    if not f:
        return None
    ticks = int(f[11]) + int(f[12])  # fields 14, 15
    if with_children:
        ticks += int(f[13]) + int(f[14])  # fields 16, 17
    return ticks


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


class TreeTicks:
    """CPU ticks used by a process tree, dead members included (their last reading is kept)."""

    def __init__(self):
        self.last: dict[tuple[int, str], int] = {}

    def update(self, pids) -> int:
        for pid in pids:
            f = _stat_fields(pid)
            if f:
                self.last[(pid, f[18])] = int(f[11]) + int(f[12])  # keyed by (pid, starttime)
        return sum(self.last.values())


class RssSampler(threading.Thread):
    """Every `every` s: RSS of the server process tree (peak kept), CPU ticks of the server
    tree, of this benchmark's own tree (driver + Chromium) and of the whole machine."""

    def __init__(self, root: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak, self.last, self.samples, self.max_procs = 0, 0, 0, 0
        self.server_ticks, self.client_ticks = TreeTicks(), TreeTicks()
        self.marks: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def sample(self) -> dict:
        server = process_tree(self.root)
        client = [p for p in process_tree(os.getpid()) if p not in set(server)]
        rss = sum(rss_bytes(p) for p in server)
        busy, total = machine_ticks()
        with self._lock:
            self.last = rss
            self.peak = max(self.peak, rss)
            self.max_procs = max(self.max_procs, len(server))
            self.samples += 1
            return {"t": time.time(), "rss": rss, "server": self.server_ticks.update(server),
                    "client": self.client_ticks.update(client), "busy": busy, "total": total}

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def mark(self, name: str) -> None:
        self.marks[name] = self.sample()

    def cpu_between(self, a: str, b: str) -> dict | None:
        """Shares of the machine's CPU capacity (all cores = 100 %) between two marks."""
        if a not in self.marks or b not in self.marks:
            return None
        x, y = self.marks[a], self.marks[b]
        cap = y["total"] - x["total"]
        if cap <= 0:
            return None
        busy = (y["busy"] - x["busy"]) / cap
        server = (y["server"] - x["server"]) / cap
        client = (y["client"] - x["client"]) / cap
        return {"seconds": round(y["t"] - x["t"], 1), "machine_busy_pct": round(100 * busy, 1),
                "server_pct": round(100 * server, 1), "bench_and_chromium_pct": round(100 * client, 1),
                "other_pct": round(100 * max(0.0, busy - server - client), 1)}

    def stop(self):
        self._halt.set()
        self.join(5)


def wait_until_quiet(max_wait: float, threshold: float = 0.25, window: float = 3.0) -> dict:
    """Wait (at most max_wait s) until the machine is less than `threshold` busy over `window` s:
    other people's work on the same cores would be measured as the app's slowness."""
    t0 = time.time()
    while True:
        b0, c0 = machine_ticks()
        time.sleep(window)
        b1, c1 = machine_ticks()
        busy = (b1 - b0) / max(1, c1 - c0)
        if busy < threshold or time.time() - t0 >= max_wait:
            return {"waited_s": round(time.time() - t0, 1), "busy_pct": round(100 * busy, 1),
                    "loadavg": open("/proc/loadavg").read().split()[:3]}


# ---------------------------------------------------------------- server ----------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on 127.0.0.1 with fresh temporary runs/ and data/ dirs."""

    def __init__(self, port: int | None = None, keep: bool = False):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
        self.keep = keep
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        env = {**os.environ, "TRANSFERLAB_RUNS": str(self.tmp / "runs"), "TRANSFERLAB_DATA": str(self.tmp / "data"),
               "TRANSFERLAB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        t0 = time.time()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                      "--server.port", str(self.port), "--server.address", "127.0.0.1",
                                      "--browser.gatherUsageStats", "false"],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).status == 200:
                    return time.time() - t0
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_problems(self) -> list[str]:
        """Lines of the server log that look like trouble (tracebacks, errors, warnings)."""
        pat = re.compile(r"Traceback|Error|Exception|WARNING|CRITICAL|error [0-9a-f]{8}", re.I)
        return [ln for ln in self.log_text().splitlines() if pat.search(ln)]

    def stop(self, keep_log: bool = False) -> None:
        """SIGTERM the streamlit process, then SIGKILL it and any of its descendants left."""
        if self.proc is None:
            return
        tree = process_tree(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in tree[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._log.close()
        for sub in ("runs", "data"):
            shutil.rmtree(self.tmp / sub, ignore_errors=True)
        if not (self.keep or keep_log or self.log_problems()):
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- browser ---------------------
# Runs inside each tab: polls the page (cheap textContent reads) until the run's result, an
# error, or the timeout.  Times are browser Date.now() ms; the click time is caught by a
# capture listener installed before the click, so waits and skew are measured in the page.
WAIT_JS = r"""
async ({timeoutMs, pollMs}) => {
  const t0 = Date.now();
  let maxPos = 0, sawRunning = false, firstSeen = null, last = '';
  const snip = s => (s || '').replace(/\s+/g, ' ').trim().slice(0, 400);
  while (Date.now() - t0 < timeoutMs) {
    const err = document.querySelector('[data-testid="stAlertContentError"], [data-testid="stException"]');
    if (err) return {status: 'error', text: snip(err.textContent), t: Date.now(), click: window.__clickT || null, maxPos, sawRunning};
    const ok = [...document.querySelectorAll('[data-testid="stAlertContentSuccess"]')]
        .map(e => e.textContent).find(s => s.includes('best val accuracy'));
    const main = document.querySelector('[data-testid="stMain"]') || document.body;
    const body = main.textContent || '';
    if (ok || body.includes('best val accuracy'))
      return {status: 'done', text: snip(ok || body.slice(body.indexOf('best val accuracy') - 200)), t: Date.now(),
              click: window.__clickT || null, maxPos, sawRunning};
    if (/\bfailed\b/i.test(body))
      return {status: 'error', text: snip(body.slice(Math.max(0, body.search(/\bfailed\b/i) - 200))), t: Date.now(),
              click: window.__clickT || null, maxPos, sawRunning};
    if ((document.body.textContent || '').includes('Connection error'))
      return {status: 'error', text: 'Streamlit: Connection error', t: Date.now(), click: window.__clickT || null, maxPos, sawRunning};
    const m = body.match(/(\d+)(?:st|nd|rd|th) in line/);
    if (m) { maxPos = Math.max(maxPos, +m[1]); if (firstSeen === null) firstSeen = Date.now(); }
    if (/s left for the whole job/.test(body)) sawRunning = true;
    last = snip(body.slice(-240));
    await new Promise(r => setTimeout(r, pollMs));
  }
  return {status: 'timeout', text: 'last seen: ' + last, t: Date.now(), click: window.__clickT || null, maxPos, sawRunning};
}
"""
CLICK_SPY_JS = "window.__clickT = null; document.addEventListener('click', () => { if (!window.__clickT) window.__clickT = Date.now(); }, true);"


async def launch_browser(p):
    return await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


async def open_train_tab(browser, url: str, timeout_s: float):
    """A new context (own Streamlit session and sid) on /train, with Start enabled."""
    ctx = await browser.new_context(viewport=VIEWPORT)
    page = await ctx.new_page()
    page.set_default_timeout(timeout_s * 1000)
    await page.goto(f"{url}/train", wait_until="domcontentloaded")
    start = page.get_by_role("button", name="Start")
    await start.first.wait_for(state="visible")
    await page.get_by_text("Press Start to train").first.wait_for(state="visible")
    t_end = time.time() + timeout_s
    while not await start.first.is_enabled():
        if time.time() > t_end:
            raise TimeoutError("Start never became enabled")
        await asyncio.sleep(0.2)
    return ctx, page


async def settle(page, timeout_s: float = 30) -> None:
    """Until the page's script run has finished (no running indicator)."""
    t_end = time.time() + timeout_s
    while time.time() < t_end:
        running = await page.evaluate(
            "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')")
        if not running:
            return
        await asyncio.sleep(0.2)


async def fresh_data_tab(browser, url: str, timeout_s: float) -> dict:
    t0 = time.time()
    ctx = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await ctx.new_page()
        await page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        await page.get_by_text(DATA_TEXT).first.wait_for(state="visible", timeout=timeout_s * 1000)
        return {"seconds": time.time() - t0, "ok": True}
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"seconds": time.time() - t0, "ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    finally:
        await ctx.close()


def pct(x):
    return None if x is None else round(100 * x, 1)


async def run_k(k: int, port: int | None, timeout_s: float, fresh_delay: float, keep: bool,
                quiet_wait: float = 0) -> dict:
    from playwright.async_api import async_playwright
    quiet = wait_until_quiet(quiet_wait) if quiet_wait > 0 else None
    t_wall = time.time()
    server = Server(port, keep)
    res: dict = {"k": k, "port": server.port, "tmp": str(server.tmp), "machine_before": quiet}
    sampler = None
    deadline = t_wall + timeout_s
    left = lambda: max(1.0, deadline - time.time())  # noqa: E731
    try:
        res["server_start_s"] = round(server.start(min(120, timeout_s)), 1)
        sampler = RssSampler(server.pid)
        sampler.start()
        async with async_playwright() as p:
            browser = await launch_browser(p)
            try:
                # The first tab alone (it pays for the imports and the dataset scan), the rest 4 at a time.
                t_open = time.time()
                tabs = [await asyncio.wait_for(open_train_tab(browser, server.url, left()), left())]
                sem = asyncio.Semaphore(4)

                async def opened():
                    async with sem:
                        return await open_train_tab(browser, server.url, left())
                tabs += await asyncio.wait_for(asyncio.gather(*(opened() for _ in range(k - 1))), left())
                for _, page in tabs:
                    await settle(page, 30)
                    await page.evaluate(CLICK_SPY_JS)
                res["open_tabs_s"] = round(time.time() - t_open, 1)
                print(f"    {k} Train tabs ready in {res['open_tabs_s']} s; clicking Start in all", flush=True)
                sampler.mark("before_clicks")

                # All clicks at once: every click goes out over CDP before any answer is awaited.
                t0 = time.time()
                clicks = await asyncio.wait_for(asyncio.gather(
                    *(page.get_by_role("button", name="Start").first.click(no_wait_after=True) for _, page in tabs),
                    return_exceptions=True), left())
                t_clicked = time.time()
                click_errors = [f"{type(c).__name__}: {c}" for c in clicks if isinstance(c, BaseException)]

                waiters = [asyncio.create_task(page.evaluate(WAIT_JS, {"timeoutMs": int(left() * 1000) - 20_000,
                                                                       "pollMs": 300}))
                           for _, page in tabs]

                async def fresh():
                    await asyncio.sleep(fresh_delay)
                    r = await fresh_data_tab(browser, server.url, min(120, left()))
                    r["busy_tabs_when_drawn"] = sum(not w.done() for w in waiters)
                    return r
                fresh_task = asyncio.create_task(fresh())
                pending = set(waiters)
                while pending and time.time() < deadline:
                    _, pending = await asyncio.wait(pending, timeout=min(15.0, left()))
                    if pending:
                        print(f"    {time.time() - t0:5.0f} s after the clicks: {k - len(pending)}/{k} tabs have a result",
                              flush=True)
                done = {w for w in waiters if w.done()}
                sampler.mark("runs_done")
                got = [w.result()["status"] for w in done if w.exception() is None]
                print(f"    {time.time() - t0:.1f} s after the clicks: {got.count('done')} finished, {got.count('error')} "
                      f"errors, {k - got.count('done') - got.count('error')} without a result (timed out)", flush=True)
                outcomes = []
                for w in waiters:
                    if w in done and w.exception() is None:
                        outcomes.append(w.result())
                    else:
                        exc = w.exception() if w in done else None
                        outcomes.append({"status": "timeout" if exc is None else "error",
                                         "text": "" if exc is None else f"{type(exc).__name__}: {exc}"[:300],
                                         "t": None, "click": None, "maxPos": 0, "sawRunning": False})
                        w.cancel()
                try:
                    res["fresh_tab"] = await asyncio.wait_for(fresh_task, max(5.0, left()))
                except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001
                    res["fresh_tab"] = {"ok": False, "seconds": None, "error": f"{type(e).__name__}: {e}"[:300]}
                sampler.mark("after_fresh")
            finally:
                await browser.close()

        click_ts = [o["click"] / 1000 if o.get("click") else None for o in outcomes]
        seen = [c for c in click_ts if c]
        res["click_skew_s"] = round(max(seen) - min(seen), 3) if seen else None
        res["click_loop_s"] = round(t_clicked - t0, 3)
        res["click_errors"] = click_errors
        res["tabs"] = []
        for i, (o, c) in enumerate(zip(outcomes, click_ts)):
            m = re.search(r"best val accuracy (\d+(?:\.\d+)?)%", o.get("text") or "")
            start = c or t_clicked
            res["tabs"].append({
                "tab": i, "status": o["status"], "acc": round(float(m.group(1)) / 100, 4) if m else None,
                "wait_s": round(o["t"] / 1000 - start, 2) if o.get("t") and o["status"] != "timeout" else None,
                "queue_pos_max": o.get("maxPos", 0), "saw_running": o.get("sawRunning", False),
                "features_reused": "features reused" in (o.get("text") or ""),
                "text": o.get("text", "")[:400]})
    except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not crash half way
        res["fatal"] = f"{type(e).__name__}: {str(e)[:2000]}"
    finally:
        if sampler:
            sampler.stop()
            res["peak_rss_gib"] = round(sampler.peak / 2**30, 3)
            res["rss_before_clicks_gib"] = round(sampler.marks.get("before_clicks", {}).get("rss", 0) / 2**30, 3)
            res["rss_after_runs_gib"] = round(sampler.marks.get("runs_done", {}).get("rss", 0) / 2**30, 3)
            res["cpu_while_training"] = sampler.cpu_between("before_clicks", "runs_done")
            res["rss_samples"] = sampler.samples
            res["max_server_procs"] = sampler.max_procs
        problems = server.log_problems()
        res["server_log_problem_lines"] = problems[-40:]
        if problems or res.get("fatal") or any(t["status"] != "done" for t in res.get("tabs", [])):
            res["server_log_tail"] = server.log_tail(60)
            res["server_log"] = str(server.log_path)
        server.stop(keep_log="server_log" in res)
        res["wall_s"] = round(time.time() - t_wall, 1)
    summarize(res)
    return res


def summarize(res: dict) -> None:
    tabs = res.get("tabs", [])
    accs = [t["acc"] for t in tabs if t["acc"] is not None]
    waits = [t["wait_s"] for t in tabs if t["status"] == "done" and t["wait_s"] is not None]
    res["finished"] = sum(t["status"] == "done" for t in tabs)
    res["errors"] = sum(t["status"] == "error" for t in tabs)
    res["timeouts"] = sum(t["status"] == "timeout" for t in tabs) + (res["k"] - len(tabs) if res.get("fatal") else 0)
    res["acc_min"], res["acc_median"], res["acc_max"] = ((min(accs), statistics.median(accs), max(accs))
                                                         if accs else (None, None, None))
    res["wait_max_s"] = max(waits) if waits else None
    res["wait_median_s"] = round(statistics.median(waits), 2) if waits else None
    fresh = res.get("fresh_tab") or {}
    res["fresh_tab_s"] = round(fresh["seconds"], 2) if fresh.get("ok") else None
    res["targets_met"] = {
        "all_finished_no_error": res["finished"] == res["k"] and not res.get("fatal"),
        "each_acc_ge_94": bool(accs) and len(accs) == res["k"] and min(accs) >= TARGETS["min_acc"],
        "slowest_le_60s": res["wait_max_s"] is not None and res["finished"] == res["k"]
        and res["wait_max_s"] <= TARGETS["slowest_s"],
        "fresh_tab_le_10s": res["fresh_tab_s"] is not None and res["fresh_tab_s"] <= TARGETS["fresh_tab_s"],
        "peak_le_3gib": res.get("peak_rss_gib") is not None and res["peak_rss_gib"] <= TARGETS["peak_gib"],
    }


def fmt(v, spec="{:.1f}"):
    return "—" if v is None else spec.format(v)


def print_table(results: list[dict]) -> None:
    head = ["K", "finished", "errors", "acc min/med/max %", "slowest wait s", "median wait s",
            "fresh Data tab s", "peak RSS GiB", "wall s"]
    rows = []
    for r in results:
        accs = "/".join(fmt(pct(r.get(x))) for x in ("acc_min", "acc_median", "acc_max"))
        errs = f"{r['errors']}" + (f" (+{r['timeouts']} timeout)" if r.get("timeouts") else "")
        rows.append([str(r["k"]), f"{r['finished']}/{r['k']}", errs, accs, fmt(r.get("wait_max_s")),
                     fmt(r.get("wait_median_s")), fmt(r.get("fresh_tab_s"), "{:.2f}"),
                     fmt(r.get("peak_rss_gib"), "{:.2f}"), fmt(r.get("wall_s"))])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def print_details(r: dict) -> None:
    print(f"\nK={r['k']}: server on port {r['port']}, fresh empty runs/ and data/ in {r['tmp']} "
          f"(no feature cache: the first job reads the photos and extracts features)")
    if r.get("fatal"):
        print(f"  FATAL: {r['fatal']}")
    print(f"  server up in {fmt(r.get('server_start_s'))} s; {r['k']} Train tabs ready in {fmt(r.get('open_tabs_s'))} s; "
          f"server RSS before clicks {fmt(r.get('rss_before_clicks_gib'), '{:.2f}')} GiB, "
          f"peak {fmt(r.get('peak_rss_gib'), '{:.2f}')} GiB ({r.get('rss_samples', 0)} samples every 0.25 s, "
          f"up to {r.get('max_server_procs', '?')} processes in the tree)")
    if r.get("machine_before"):
        q = r["machine_before"]
        print(f"  machine before the start: {q['busy_pct']} % busy over 3 s (waited {q['waited_s']} s for it to be quiet), "
              f"loadavg {' '.join(q['loadavg'])}")
    cpu = r.get("cpu_while_training")
    if cpu:
        print(f"  CPU from the clicks to the last result ({cpu['seconds']} s; 100 % = all cores): machine busy "
              f"{cpu['machine_busy_pct']} % = server {cpu['server_pct']} % + this benchmark and Chromium "
              f"{cpu['bench_and_chromium_pct']} % + other processes {cpu['other_pct']} %")
    if "click_skew_s" in r:
        print(f"  clicks: skew {fmt(r['click_skew_s'], '{:.3f}')} s between first and last click seen by the pages "
              f"(click loop {r['click_loop_s']:.3f} s){'; click errors: ' + '; '.join(r['click_errors']) if r['click_errors'] else ''}")
    fresh = r.get("fresh_tab") or {}
    if fresh:
        print(f"  fresh tab on the Data page: {fmt(fresh.get('seconds'), '{:.2f}')} s "
              f"({'ok' if fresh.get('ok') else 'FAILED: ' + fresh.get('error', '')}; "
              f"{fresh.get('busy_tabs_when_drawn', '?')} of {r['k']} tabs still waiting when it was drawn)")
    for t in r.get("tabs", []):
        extra = f"max queue position {t['queue_pos_max']}" if t["queue_pos_max"] else "never queued"
        extra += ", features reused" if t["features_reused"] else ""
        line = (f"  tab {t['tab']:>2}: {t['status']:<7} wait {fmt(t['wait_s'], '{:6.1f}')} s  "
                f"acc {fmt(pct(t['acc']))} %  ({extra})")
        if t["status"] != "done":
            line += f"\n          page said: {t['text'] or '(nothing)'}"
        print(line)
    met = r.get("targets_met", {})
    print("  targets (spec for K=8): " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in met.items()))
    print_server_log(r, "  ")


def print_server_log(r: dict, indent: str = "") -> None:
    """The server log's suspicious lines and its tail, as a result dict carries them."""
    if r.get("server_log_problem_lines"):
        print(f"{indent}server log lines that look like trouble:")
        for ln in r["server_log_problem_lines"][-15:]:
            print(f"    {ln}")
    if r.get("server_log_tail"):
        print(f"{indent}server log tail ({r.get('server_log')}):")
        for ln in r["server_log_tail"].splitlines()[-30:]:
            print(f"    {ln}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tabs", type=int, action="append", help="K, tabs pressing Start at once (repeatable)")
    ap.add_argument("--port", type=int, help="server port (default: a free one per K)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per K, everything included")
    ap.add_argument("--fresh-delay", type=float, default=3, help="seconds after the clicks to open the fresh Data tab")
    ap.add_argument("--keep", action="store_true", help="keep the server log directory")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="before each K, wait up to this many seconds for the machine to be under 25%% busy (0: don't)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop the server
    ks = args.tabs or [8]
    if any(k < 1 for k in ks):
        ap.error("--tabs must be >= 1")
    info = machine_info()
    print_machine(info)
    print(f"app: {ROOT / 'app.py'}; defaults: ants/bees demo, MobileNetV2 frozen backbone, 5 epochs; "
          f"Chromium {CHROMIUM} (headless, {VIEWPORT['width']}x{VIEWPORT['height']}, one context per tab)")
    print("each K: fresh server and fresh empty temporary runs/ and data/ (the first job really extracts features)\n",
          flush=True)
    results = []
    for k in ks:
        print(f"--- K={k}: starting ...", flush=True)
        r = asyncio.run(run_k(k, args.port, args.timeout, args.fresh_delay, args.keep, args.quiet_wait))
        results.append(r)
        print_details(r)
        print(flush=True)
    print("Summary (wait = seconds from a tab's click to its result shown in that tab):")
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "targets": TARGETS, "results": results}, indent=1))
        print(f"\nJSON written to {args.json}")
    ok = all(r["finished"] == r["k"] and not r.get("fatal") for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
