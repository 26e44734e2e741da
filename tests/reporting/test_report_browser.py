"""The HTML report in a real browser: headless Chromium (Debian's chromium, else Playwright's
own build) opens the demo-like report (posterior + decision + ledger, from the suite's small
fit) with the network blocked; no console errors, every figure decoded with a non-zero size,
and a full-page screenshot saved in the test's temporary folder.

``make test`` installs what is needed (the ``playwright`` package from the dev extra; Debian's
chromium where apt-get is available); the test is skipped, saying why, only where no browser
can be found or installed.
"""

from __future__ import annotations

import shutil

import pytest
from test_html_report import ALL_FIGURES, full_report, report_inputs  # noqa: F401

pytestmark = pytest.mark.slow  # uses the suite's fitted posterior

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _launch(playwright):
    """A headless Chromium: the system's, else Playwright's bundled one; skip if neither."""
    exe = next((shutil.which(name) for name in CANDIDATES if shutil.which(name)), None)
    errors = []
    for kwargs in ([{"executable_path": exe}] if exe else []) + [{}]:
        try:
            return playwright.chromium.launch(headless=True, args=["--no-sandbox"], **kwargs)
        except Exception as err:  # noqa: BLE001 - any launch failure means "no browser here"
            errors.append(
                f"{kwargs.get('executable_path', 'playwright chromium')}: "
                f"{str(err).splitlines()[0]}"
            )
    pytest.skip(
        "no headless Chromium could be started (install Debian's chromium, or run "
        "`python -m playwright install chromium`): " + "; ".join(errors)
    )


def test_report_renders_in_chromium(full_report, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
    console_errors, page_errors, external = [], [], []
    with sync_api.sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda msg: console_errors.append(msg.text) if msg.type == "error" else None,
            )
            page.on("pageerror", lambda err: page_errors.append(str(err)))

            def route(r):  # the report must not need the network
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(full_report.resolve().as_uri(), wait_until="load")
            figures = page.eval_on_selector_all(
                "figure[data-figure]",
                """els => els.map(f => {
                    const img = f.querySelector('img');
                    const box = f.getBoundingClientRect();
                    return {name: f.dataset.figure, complete: img !== null && img.complete,
                            width: img ? img.naturalWidth : 0,
                            height: img ? img.naturalHeight : 0,
                            shownWidth: box.width, shownHeight: box.height};
                })""",
            )
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            title = page.title()
        finally:
            browser.close()
    assert not console_errors, console_errors
    assert not page_errors, page_errors
    assert not external, external
    assert {f["name"] for f in figures} == ALL_FIGURES
    for f in figures:
        assert f["complete"] and f["width"] > 0 and f["height"] > 0, f
        assert f["shownWidth"] > 100 and f["shownHeight"] > 50, f
    assert title.startswith("bayesmix report")
    assert shot.stat().st_size > 50_000
