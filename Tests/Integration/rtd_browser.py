"""Headless Chromium for the dashboard tests and the page benchmark (selenium + Debian's
chromium-driver). Screenshots and measurements go to $RTD_ARTIFACTS (default .build/test-artifacts)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RTD_ARTIFACTS", ROOT / ".build" / "test-artifacts"))
WIDTH, HEIGHT = 1280, 720


class Unavailable(Exception):
    pass


class Browser:
    def __init__(self, width: int = WIDTH, height: int = HEIGHT):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError as e:
            raise Unavailable(f"python selenium missing ({e})") from None
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        if not chromium or not driver:
            raise Unavailable(f"chromium={chromium} chromedriver={driver}")
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--enable-precise-memory-info", "--disable-extensions", "--no-first-run",
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  f"--window-size={width},{height}"):
            opts.add_argument(a)
        opts.binary_location = chromium
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(driver))
        # An exact CSS viewport, whatever the window decorations take.
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.driver.execute_cdp_cmd("Performance.enable", {})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def quit(self) -> None:
        try:
            self.driver.quit()
        except Exception:
            pass

    # Navigation and queries
    def open(self, url: str) -> None:
        # A fresh document each time (a hash-only change would keep the old page).
        self.driver.get("about:blank")
        self.driver.get(url)

    def js(self, script: str, *args) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, timeout: float = 20, what: str = "", interval: float = 0.1) -> Any:
        """Polls a JS expression (`return …`) until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.js(script)
            except Exception as e:  # the page may be mid-navigation
                last = e
            if last and not isinstance(last, Exception):
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or script!r}; last value {last!r}; "
                             f"console: {self.console()[-5:]}")

    def text(self, css: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def click(self, css: str) -> None:
        self.driver.find_element("css selector", css).click()

    def console(self) -> list:
        try:
            return [e["message"] for e in self.driver.get_log("browser")]
        except Exception:
            return []

    def screenshot(self, name: str) -> Path:
        p = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(p))
        return p

    def save_json(self, name: str, data: Any) -> Path:
        p = ARTIFACTS / f"{name}.json"
        p.write_text(json.dumps(data, indent=2))
        return p

    # Measurements
    def performance_metrics(self) -> dict:
        m = self.driver.execute_cdp_cmd("Performance.getMetrics", {})
        return {x["name"]: x["value"] for x in m["metrics"]}

    def frame_stats(self, seconds: float) -> dict:
        """Frame intervals (requestAnimationFrame) and the page's own render times over `seconds`."""
        self.js("""
            window.__frames = []; window.__renderBase = rtd.perf.renders; window.__renderMs = rtd.perf.totalMs;
            let last = performance.now();
            window.__frameLoop = true;
            function f(t) { window.__frames.push(t - last); last = t; if (window.__frameLoop) requestAnimationFrame(f); }
            requestAnimationFrame(f);""")
        time.sleep(seconds)
        r = self.js("""
            window.__frameLoop = false;
            const f = window.__frames.slice(1).sort((a, b) => a - b);
            const q = p => f.length ? f[Math.min(f.length - 1, Math.floor(p * f.length))] : null;
            const renders = rtd.perf.renders - window.__renderBase, ms = rtd.perf.totalMs - window.__renderMs;
            return {frames: f.length, frame_p50_ms: q(0.5), frame_p99_ms: q(0.99), frame_max_ms: f.length ? f[f.length - 1] : null,
                    renders, render_avg_ms: renders ? ms / renders : null, render_max_ms: rtd.perf.maxMs,
                    long_tasks: rtd.perf.longTasks,
                    heap_used_bytes: performance.memory ? performance.memory.usedJSHeapSize : null,
                    dom_nodes: document.getElementsByTagName('*').length};""")
        return r


def wait_until(fn: Callable[[], Any], timeout: float = 20, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Optional[Any] = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")
