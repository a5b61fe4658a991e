"""The dashboard in a real browser against hostile data and hostile pages (issue 21, items 4 and
5): Debian's chromium (playwright) on `w2stree dashboard`. Stored text that is Markdown or HTML
(an image pointing at evil.example, a script) is shown literally on every page, and the browser
requests nothing beyond the server. A DNS-rebinding page (chromium resolving evil.example to
127.0.0.1) gets a 403 from the guarded server, and a page without the token is refused; a plain
`streamlit run dashboard/app.py` refuses such a page in the app itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port, stop, wait_healthy
from test_browser import ARGS, CHROMIUM, PAGES, settle
from test_dashboard_pages import EPISODES, XSS

from core.mcts import run_mcts
from core.pairs import tree_pairs
from core.trajectory import Run, Step, Task, Trajectory
from core.tree import build_trees

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOKEN = "security-test-token"
IMAGE = "![x](http://evil.example/track.png)"
HTML = '<img src="http://evil.example/i.png" onerror="alert(1)">'
MODEL = f"weak {IMAGE} {HTML}"
TASK = f"t1 {IMAGE}"


def _hostile_store(store) -> None:
    """A store whose every name and text is Markdown / HTML pointing at evil.example."""
    run = f"run {IMAGE}"
    store.upsert_tasks([Task("shop", TASK, "train", f"buy {IMAGE} {HTML}")])
    store.add_run(Run(run, "collect", "shop", f"policy {IMAGE}", MODEL), status="finished")
    trajs = [Trajectory("shop", TASK, f"buy {IMAGE} {HTML}",
                        [Step(f"{a} {IMAGE}", f"page after {a} {XSS} {HTML}", f"I think {IMAGE}",
                              reward=r if i == len(actions) - 1 else 0.0) for i, a in enumerate(actions)],
                        reward=r, model=MODEL, run_id=run)
             for actions, r in EPISODES["t1"]]
    store.add_trajectories(trajs)
    trees = build_trees(trajs)
    for g in trees:
        run_mcts(g, iterations=30)
    store.save_trees(trees)
    store.save_pairs([p for g in trees for p in tree_pairs(g, "step")])
    evals = [Trajectory("shop", TASK, "buy", t.steps, reward=t.reward, source="eval", model=m)
             for t, m in zip(trajs, (MODEL, f"strong {IMAGE}"), strict=False)]
    store.add_trajectories(evals)
    store.register_model(MODEL, f"/models/{IMAGE}", role="weak")
    store.add_results([{"experiment_id": f"exp {IMAGE}", "env": "shop", "method": f"sft-weak {IMAGE}", "model": MODEL,
                        "seed": 0, "trajs_per_task": n, "avg_reward": 0.5, "success_rate": 0.5, "n_examples": 0}
                       for n in (2, 4)])


def _start(cmd: list[str], tmp_path: Path, port: int, token: str = TOKEN) -> subprocess.Popen:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(REPO), "W2STREE_DASHBOARD_TOKEN": token})
    wait_healthy(proc, port, log, 240, "dashboard")
    return proc


def test_hostile_text_is_literal_on_every_page(store, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    _hostile_store(store)
    port = free_port()
    proc = _start([sys.executable, "-m", "core", "dashboard", "--db", str(store.path), "--port", str(port)],
                  tmp_path, port)
    server = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            external: list[str] = []
            dialogs: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:"))
                    else external.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{server}/?token={TOKEN}")
            settle(page, "Overview")
            shown: dict[str, str] = {}
            for name, (path, title) in PAGES.items():
                page.goto(f"{server}/{path}")
                settle(page, title)
                assert page.locator("[data-testid='stException']").count() == 0, f"exception on {name}"
                if name == "trees":  # the growth replay's caption names the last trajectory's model
                    page.get_by_text("Growth replay").click()
                    page.get_by_text("after trajectory").first.wait_for(timeout=30_000)
                    settle(page, title)
                # word joiners (invisible) keep URLs in markdown elements from becoming links
                shown[name] = page.locator("[data-testid='stMain']").inner_text().replace("\u2060", "")
                assert page.locator("img[src*='evil.example']").count() == 0, name
                links = page.locator("a[href^='http://evil'], a[href^='https://evil'], a[href^='//evil']")
                assert links.count() == 0, (name, links.first.evaluate("e => e.closest('[data-testid]').outerHTML.slice(0, 800)"))
            browser.close()
    finally:
        stop(proc)
    assert external == [], f"requests beyond the dashboard server: {external}"
    assert dialogs == [], f"a script from stored text ran: {dialogs}"
    growth = next(line for line in shown["trees"].splitlines() if "after trajectory" in line)
    assert IMAGE in growth and HTML in growth, growth  # the model name, literally
    for name in ("overview", "trees", "compare"):
        assert IMAGE in shown[name], name


def _rebinding_browser(pw):
    """Chromium for which evil.example is 127.0.0.1 (what DNS rebinding achieves)."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=[*ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])


def test_a_rebinding_page_and_a_tokenless_page_are_refused(store, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    _hostile_store(store)
    port = free_port()
    proc = _start([sys.executable, "-m", "core", "dashboard", "--db", str(store.path), "--port", str(port)],
                  tmp_path, port)
    try:
        with sync_playwright() as pw:
            browser = _rebinding_browser(pw)
            page = browser.new_page()
            res = page.goto(f"http://evil.example:{port}/?token={TOKEN}")
            assert res.status == 403 and "Host" in page.inner_text("body")
            res = page.goto(f"http://127.0.0.1:{port}/trees")
            assert res.status == 403 and "token" in page.inner_text("body")
            browser.close()
    finally:
        stop(proc)


def test_plain_streamlit_run_refuses_a_rebinding_page(store, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    _hostile_store(store)
    port = free_port()
    proc = _start([sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.port",
                   str(port), "--", "--db", str(store.path)], tmp_path, port, token="")
    try:
        with sync_playwright() as pw:
            browser = _rebinding_browser(pw)
            page = browser.new_page()
            page.goto(f"http://evil.example:{port}/")
            page.get_by_text("Refusing to serve").wait_for(timeout=120_000)
            body = page.inner_text("body")
            assert "not a loopback name" in body and "evil.example" in body
            assert "Overview" not in page.locator("[data-testid='stMain']").inner_text()
            page.goto(f"http://127.0.0.1:{port}/")  # this machine's own page still works
            settle(page, "Overview")
            browser.close()
    finally:
        stop(proc)
