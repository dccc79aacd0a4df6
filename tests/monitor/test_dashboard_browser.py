"""The cleo page of the Dask dashboard in a real headless Chromium, driven over the DevTools protocol.

While a workflow with a retried and a failing node runs, the page loads, shows the run, and its
nodes' states change; the browser reports no JavaScript errors; a screenshot is saved under
``tests/artifacts/`` (a CI artifact, ignored by git).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

import cleo_dask as cd

pytestmark = pytest.mark.chromium  # a headless Chromium loads the page

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """A headless Chromium and one page target, spoken to over the DevTools websocket."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="cleo-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--window-size=1400,1100", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0
        self.errors: list[str] = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _note(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._note(msg)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


# Reads the page's Bokeh document: the chosen run's node states and the status line.
READ_PAGE = """(() => {
  if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
  const doc = Bokeh.documents[0];
  const nodes = doc.get_model_by_name('cleo-nodes');
  const runs = doc.get_model_by_name('cleo-runs-table');
  const status = doc.get_model_by_name('cleo-run-status');
  if (!nodes || !runs) return null;
  const names = Array.from(nodes.data.name), states = Array.from(nodes.data.state);
  return {nodes: Object.fromEntries(names.map((n, i) => [n, states[i]])), runs: runs.text,
          status: status ? status.text : ''};
})()"""


def slow_fetch(agent):
    time.sleep(1.0)
    return 1


def slow_step(agent, retried):
    time.sleep(1.0)
    return retried + 1


def broken(agent, fetch):
    time.sleep(0.5)
    raise ValueError("this node always fails")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="no chromium (bash .ci/run installs it; under CI its absence fails the test)")
def test_cleo_page_in_headless_chromium(engine, tmp_path):
    assert CHROMIUM, "chromium is not installed although CI is set (.ci/run installs it)"
    marker = tmp_path / "retried"

    def retried(agent, fetch):
        time.sleep(0.5)
        if not marker.exists():
            marker.touch()
            raise ConnectionError("flaky service, first call")
        return fetch

    wf = cd.Workflow("browser-demo")
    wf.add(slow_fetch, name="fetch")
    wf.add(retried, after=["fetch"], retries=1, backoff=cd.fixed(1.0))
    wf.add(slow_step, name="summarize", after=["retried"])
    wf.add(broken, after=["fetch"])

    browser = Browser()
    try:
        browser.call("Page.navigate", url=engine.cleo_dashboard_link)
        deadline = time.time() + 60
        while browser.js(READ_PAGE) is None:   # the page is up (its Bokeh document synced)
            assert time.time() < deadline, "the cleo page did not load"
            time.sleep(0.1)
        run = engine.submit(wf, cd.Agent("browser-agent"))
        seen: list[dict] = []
        deadline = time.time() + 60
        while time.time() < deadline:
            page = browser.js(READ_PAGE)
            if page and run.id in page["runs"] and page["nodes"]:
                if not seen or page["nodes"] != seen[-1]:
                    seen.append(page["nodes"])
                if run.done() and page["nodes"].get("broken") == "failed" \
                        and page["nodes"].get("summarize") == "succeeded":
                    break
            time.sleep(0.1)
        assert seen, "the page never showed the run"
        final = seen[-1]
        assert final == {"fetch": "succeeded", "retried": "succeeded", "summarize": "succeeded",
                         "broken": "failed"}, seen
        assert len(seen) >= 3, seen   # states changed live while the run went on
        assert any(s.get("fetch") in ("pending", "running") for s in seen[:-1]), seen
        assert any(s.get("retried") in ("running", "retrying") for s in seen), seen
        page = browser.js(READ_PAGE)
        assert "browser-agent" in page["status"], page
        assert f"data-run='{run.id}' data-state='failed'" in page["runs"], page
        time.sleep(0.6)   # one more refresh, then the picture
        ARTIFACTS.mkdir(exist_ok=True)
        shot = browser.call("Page.captureScreenshot", format="png")
        path = ARTIFACTS / "cleo_dashboard.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.stat().st_size > 10_000
        browser.js("1")  # drain pending console / log messages
        assert browser.errors == [], browser.errors
    finally:
        browser.close()
