"""A display for napari on a machine without one (CI, a server): a private Xvfb.

napari draws its canvas with OpenGL. Qt's ``offscreen`` platform creates OpenGL contexts
through GLX, so even headless it needs an X server; Xvfb (``apt-get install xvfb``) with
Mesa's software renderer is enough. :func:`ensure_display` starts one when ``DISPLAY`` is
unset and stops it when the process exits. No napari or Qt import here.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys

__all__ = ["ensure_display"]

_XVFB: subprocess.Popen | None = None


def ensure_display(screen: str = "1600x1000x24") -> str | None:
    """``DISPLAY`` after making sure there is one: the existing one, or a new Xvfb's.

    Returns ``None`` when there is no display and Xvfb is not installed. Call it before
    the first Qt import (Qt reads ``DISPLAY`` when the application starts).
    """
    global _XVFB
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    read, write = os.pipe()
    try:
        # -displayfd: Xvfb picks a free display number and writes it to the pipe when ready.
        proc = subprocess.Popen(
            [xvfb, "-displayfd", str(write), "-screen", "0", screen, "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write)
        write = -1
        with os.fdopen(read, "r") as pipe:
            read = -1
            number = pipe.readline().strip()
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
    if not number:
        proc.kill()
        proc.wait()
        return None
    _XVFB = proc
    # A watchdog stops Xvfb once this process has gone (also after a crash): a Qt
    # application holds its X connection until after the atexit handlers, and killing the
    # server under it makes Xlib abort the exiting process.
    subprocess.Popen(
        ["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; kill "$1" 2>/dev/null',
         str(os.getpid()), str(proc.pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    atexit.register(_stop, proc)
    os.environ["DISPLAY"] = f":{number}"
    return os.environ["DISPLAY"]


def _stop(proc: subprocess.Popen) -> None:
    """At exit without a Qt application: stop Xvfb now (with one, the watchdog does)."""
    if _qt_application_alive():
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _qt_application_alive() -> bool:
    for name in ("PyQt6.QtWidgets", "PyQt5.QtWidgets", "PySide6.QtWidgets", "PySide2.QtWidgets"):
        module = sys.modules.get(name)
        if module is not None and module.QApplication.instance() is not None:
            return True
    return False
