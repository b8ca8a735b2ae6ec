"""End to end: ``mecca serve`` in a subprocess, driven by a real headless Chromium.

Loads a phantom case, clicks in the axial view, presses Step and checks that the overlays
changed and an advice region is drawn. The page screenshot is kept under pytest's tmp path;
with ``MECCA_UPDATE_SCREENSHOT=1`` it also replaces ``docs/ui.png`` (the README's).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.data.phantoms import write_phantom_folder

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="chromium is not installed at /usr/bin/chromium "
                       "(Debian packages chromium and chromium-driver)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (web extra)")


class Server(NamedTuple):
    url: str
    data: Path  #: the --data folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command() -> list[str]:
    """``mecca serve`` through the real CLI once the module is registered there."""
    from mecca_rllib.cli import SUBCOMMAND_MODULES

    if "mecca_rllib.web.commands" in SUBCOMMAND_MODULES:
        return [sys.executable, "-m", "mecca_rllib.cli", "serve"]
    return [sys.executable, "-m", "mecca_rllib.web.commands", "serve"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    """``mecca serve`` on a free loopback port with a tiny checkpoint and two phantoms."""
    root = tmp_path_factory.mktemp("serve")
    checkpoint = tiny_checkpoint
    data = write_phantom_folder(root / "data", 2, (16, 40, 40), spacing=(2.0, 1.0, 1.0))
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [*serve_command(), "--checkpoint", str(checkpoint), "--data", str(data), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # imports (torch, ray) are slow on a busy machine
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"mecca serve did not start:\n{(root / 'server.log').read_text()}")
                time.sleep(0.2)
        yield Server(url, data)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture()
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            pg.on("pageerror", lambda err: errors.append(str(err)))
            pg.goto(server.url)
            yield pg
            assert not errors, f"JavaScript errors in the page: {errors}"
        finally:
            browser.close()


def wait_idle(page) -> None:
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=30_000)


def pixels(page, view: str) -> str:
    return page.evaluate(f"document.querySelector('#view-{view} canvas').toDataURL()")


def test_click_step_draws_overlays_and_advice(server, page, tmp_path):
    wait_idle(page)
    page.select_option("#case-select", "phantom_0000")
    wait_idle(page)
    assert "phantom_0000" in page.inner_text("#case-name")

    axial = page.locator("#view-axial canvas")
    box = axial.bounding_box()
    for dx, dy in ((0.0, 0.0), (0.12, 0.0), (0.0, -0.12), (-0.1, 0.1)):
        axial.click(position={"x": box["width"] * (0.5 + dx), "y": box["height"] * (0.5 + dy)})
        wait_idle(page)
    assert page.inner_text("#pending").startswith("4 new clicks")
    before = pixels(page, "axial")

    page.wait_for_timeout(300)  # some "user time" for the timer
    page.click("#step")
    wait_idle(page)
    assert page.inner_text("#steps-done") == "1"
    assert pixels(page, "axial") != before, "the overlays did not change after Step"
    row = page.locator("#history tbody tr").first.locator("td").all_inner_texts()
    assert row[0] == "1" and row[1] == "4"
    assert 0.0 <= float(row[2]) <= 1.0  # Dice against the case's label
    assert float(row[3].removesuffix(" s")) >= 0.3  # the user's time, from the page's timer

    regions = page.locator("#advice-list li")
    assert regions.count() >= 1
    regions.first.click()  # jump every view to the least confident region
    drawn = page.evaluate("Number(document.querySelector('#view-axial canvas').dataset.adviceDrawn)")
    assert drawn >= 1, "no advice region drawn in the axial view at the region's slice"

    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MECCA_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    with page.expect_download() as download:
        page.click("#export")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "phantom_0000_segmentation.nii.gz"
    source = nib.load(server.data / "images" / "phantom_0000.nii.gz")
    exported = nib.load(saved)
    assert exported.shape == source.shape and np.allclose(exported.affine, source.affine)
    assert set(np.unique(np.asarray(exported.dataobj))) <= {0, 1}


def test_bad_upload_shows_a_message_and_the_page_keeps_working(page, tmp_path):
    wait_idle(page)
    junk = tmp_path / "notes.nii.gz"
    junk.write_bytes(b"this is not a NIfTI file")
    page.set_input_files("#image-file", str(junk))
    wait_idle(page)
    message = page.locator("#message")
    assert "notes.nii.gz" in message.inner_text() and "NIfTI" in message.inner_text()
    assert "error" in (message.get_attribute("class") or "")
    page.select_option("#case-select", "phantom_0001")
    wait_idle(page)
    assert "phantom_0001" in page.inner_text("#case-name")
