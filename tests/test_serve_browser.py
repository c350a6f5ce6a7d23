"""The web page at / in a real headless browser (Debian's chromium driven by Playwright).

Skips only when no browser is available: `make test` installs chromium where it can.
"""

import os
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("RNNKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium found; install Debian's chromium package")


@pytest.fixture
def server(toy_run):
    import uvicorn

    from rnnkit.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(toy_run), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(400):
        if srv.started:
            break
        time.sleep(0.05)
    if not srv.started:
        pytest.fail("uvicorn did not start within 20 s")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_type_text_and_see_probability_bars(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.getElementById('model').textContent.includes('3 classes')")
            assert "Linear baseline on the same test split" in page.inner_text("#baseline")
            page.fill("#text", "hijklmn")
            page.click("#go")
            page.wait_for_selector("#results .row")
            labels = page.locator("#results .label").all_inner_texts()
            assert labels[0] == "beta" and sorted(labels) == ["alpha", "beta", "gamma"]
            widths = page.locator("#results .bar").evaluate_all("bars => bars.map(b => parseFloat(b.style.width))")
            assert widths == sorted(widths, reverse=True) and sum(widths) == pytest.approx(100, abs=0.5)
            # Each character the model read, highlighted by its contribution (from /explain).
            page.wait_for_selector("#why .tok")
            tokens = page.locator("#why .tok").all_inner_texts()
            assert "".join(tokens) == "hijklmn"
            assert "Why beta" in page.inner_text("#why .caption")
            # An over-long text shows the server's message instead of bars.
            page.fill("#text", "a" * 3000)
            page.click("#go")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "limit is 2000" in page.inner_text("#error")
            assert page.locator("#results .row").count() == 0
        finally:
            browser.close()
