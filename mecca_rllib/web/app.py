"""The FastAPI app of ``mecca serve``: a page and a small JSON/binary API per browser tab.

Endpoints (``{sid}``: the session id the page gets from ``POST /api/sessions``)::

    GET    /                              the page (static/index.html)
    GET    /api/info                      case names of --data, limits, network shape
    POST   /api/sessions                  new session -> {"session": sid, "state": ...}
    DELETE /api/sessions/{sid}
    GET    /api/sessions/{sid}/state      JSON state (canonical (d, h, w) voxels)
    POST   /api/sessions/{sid}/case       {"name": <a listed case>}
    POST   /api/sessions/{sid}/upload     raw NIfTI bytes (?name= display name)
    POST   /api/sessions/{sid}/reference  raw NIfTI label bytes (?name=)
    GET    /api/sessions/{sid}/image      uint8 (D, H, W) windowed image
    GET    /api/sessions/{sid}/reference  uint8 (D, H, W) reference label
    POST   /api/sessions/{sid}/clicks     {"voxel": [d, h, w], "foreground": true}
    POST   /api/sessions/{sid}/undo
    POST   /api/sessions/{sid}/step       {"user_ms": float | null}
    GET    /api/sessions/{sid}/maps       uint8 (4, d, h, w): p, confidence, advice, seg in the ROI box
    GET    /api/sessions/{sid}/export     segmentation .nii.gz on the file's own grid

Errors are JSON ``{"detail": message}``: 400 bad input (not NIfTI, click outside the
volume), 404 unknown case or session, 409 not loaded yet, 413 upload too large, 500 a step
that failed (the session is left as before it), 503 too many sessions. No endpoint takes a
file path: cases are chosen by name from the ``--data`` listing, uploads are streamed into
a private temporary folder.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mecca_rllib._version import __version__
from mecca_rllib.data.errors import DataError
from mecca_rllib.data.layouts import Case, discover_cases
from mecca_rllib.session import InteractiveSession
from mecca_rllib.web.sessions import SessionNotFound, SessionStore, TooManySessions
from mecca_rllib.web.workspace import DEFAULT_MAX_VOXELS, NotReady, Workspace, WorkspaceError

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "LOOPBACK_HOSTS", "STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 256 * 2**20
#: Host headers accepted when serving on loopback (guards against DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_GZIP_MAGIC = b"\x1f\x8b"
_NO_STORE = {"Cache-Control": "no-store"}


class CaseBody(BaseModel):
    name: str = Field(..., max_length=512)


class ClickBody(BaseModel):
    voxel: tuple[int, int, int]
    foreground: bool = True  # the side the click marks (split-hint models; shift-click: False)


class StepBody(BaseModel):
    user_ms: float | None = Field(None, ge=0)


def create_app(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    channel: int | str | None = None,
    label_value: int | None = None,
    idle_timeout_s: float = 1800.0,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_sessions: int = 16,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    session_kwargs: dict[str, Any] | None = None,
    allowed_hosts: tuple[str, ...] | list[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The web app around a MECCA checkpoint.

    Args:
        checkpoint: a ``mecca export`` folder or an Algorithm checkpoint (``load_inference_module``).
        data_dir: dataset folder (MSD, BraTS or images/+labels/); its cases are listed by name.
        channel, label_value: image channel (index or name) and label class of ``data_dir`` cases.
        idle_timeout_s: a tab's session is dropped after this long without a request.
        max_upload_bytes: largest accepted upload.
        max_sessions: most concurrent sessions (tabs).
        max_voxels: largest volume accepted.
        session_kwargs: keyword arguments of every ``InteractiveSession`` (``device``,
            ``k``, ``roi_margin``, ``hint_kernel``, ``backend``, ...).
        allowed_hosts: accepted ``Host`` headers (``("*",)`` to accept any).
    """
    from mecca_rllib.inference import load_inference_module

    module = load_inference_module(checkpoint)  # an export loads without Ray
    cases: dict[str, Case] = {}
    if data_dir is not None:
        cases = {case.name: case for case in discover_cases(data_dir)}
    if int(max_upload_bytes) < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    session_kwargs = dict(session_kwargs or {})
    InteractiveSession(module, **session_kwargs)  # bad options fail now, not in the first tab
    model_lock = threading.Lock()
    store: SessionStore[Workspace] = SessionStore(
        lambda: Workspace(module, model_lock=model_lock, session_kwargs=session_kwargs,
                          max_voxels=max_voxels),
        idle_timeout_s=idle_timeout_s, max_sessions=max_sessions,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def sweep() -> None:
            while True:
                await asyncio.sleep(min(60.0, idle_timeout_s / 4))
                store.expire()

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="mecca-rllib", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.state.module, app.state.store, app.state.cases = module, store, cases
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ page and info
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_STORE)

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        cfg = getattr(module, "model_config", None) or {}
        return {
            "version": __version__,
            "cases": sorted(cases),
            "network_shape": list(cfg.get("shape") or []),
            "max_upload_bytes": int(max_upload_bytes),
            "idle_timeout_s": float(idle_timeout_s),
        }

    # ------------------------------------------------------------------ sessions
    @app.post("/api/sessions", status_code=201)
    def new_session() -> dict[str, Any]:
        sid, ws = store.create()
        return {"session": sid, "state": ws.state()}

    @app.delete("/api/sessions/{sid}", status_code=204)
    def close_session(sid: str) -> Response:
        if not store.close(sid):
            raise SessionNotFound("session unknown or expired")
        return Response(status_code=204)

    @app.get("/api/sessions/{sid}/state")
    def state(sid: str) -> dict[str, Any]:
        return store.get(sid).state()

    # ------------------------------------------------------------------ loading
    @app.post("/api/sessions/{sid}/case")
    def load_case(sid: str, body: CaseBody) -> dict[str, Any]:
        ws = store.get(sid)
        case = cases.get(body.name)  # a name from the listing, never a path
        if case is None:
            raise HTTPException(404, f"no case named {body.name!r}; pick one from the list")
        ws.load_case(case, channel=channel, label_value=label_value)
        return ws.state()

    async def receive(request: Request, sid: str, name: str, store_file) -> dict[str, Any]:
        ws = store.get(sid)
        display = _display_name(name)
        with tempfile.TemporaryDirectory(prefix="mecca-upload-") as tmp:
            path = await _receive_nifti(request, Path(tmp), display, int(max_upload_bytes))
            await run_in_threadpool(store_file, ws, path, display)
        return ws.state()

    @app.post("/api/sessions/{sid}/upload")
    async def upload(sid: str, request: Request, name: str = "upload.nii.gz") -> dict[str, Any]:
        return await receive(request, sid, name, Workspace.load_upload)

    @app.post("/api/sessions/{sid}/reference")
    async def upload_reference(sid: str, request: Request, name: str = "label.nii.gz") -> dict[str, Any]:
        return await receive(request, sid, name, Workspace.set_reference)

    # ------------------------------------------------------------------ volumes
    @app.get("/api/sessions/{sid}/image")
    def image(sid: str) -> Response:
        return _binary(store.get(sid).image_bytes())

    @app.get("/api/sessions/{sid}/reference")
    def reference(sid: str) -> Response:
        return _binary(store.get(sid).reference_bytes())

    @app.get("/api/sessions/{sid}/maps")
    def maps(sid: str) -> Response:
        return _binary(store.get(sid).maps_bytes())

    # ------------------------------------------------------------------ interaction
    @app.post("/api/sessions/{sid}/clicks")
    def click(sid: str, body: ClickBody) -> dict[str, Any]:
        ws = store.get(sid)
        ws.click(body.voxel, body.foreground)
        return ws.state()

    @app.post("/api/sessions/{sid}/undo")
    def undo(sid: str) -> dict[str, Any]:
        ws = store.get(sid)
        ws.undo()
        return ws.state()

    @app.post("/api/sessions/{sid}/step")
    def step(sid: str, body: StepBody | None = None) -> dict[str, Any]:
        ws = store.get(sid)
        try:
            ws.step(None if body is None else body.user_ms)
        except (WorkspaceError, DataError):
            raise
        except Exception as err:  # the workspace rolled back; report and keep serving
            raise HTTPException(
                500, f"the step failed ({type(err).__name__}: {err}); the session is as before the step"
            ) from err
        return ws.state()

    @app.get("/api/sessions/{sid}/export")
    def export(sid: str) -> Response:
        filename, data = store.get(sid).export_nifti()
        return Response(data, media_type="application/gzip", headers={
            **_NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})

    return app


def _add_error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handle

    app.add_exception_handler(SessionNotFound, handler(404))
    app.add_exception_handler(NotReady, handler(409))  # looked up by MRO: wins over its base
    app.add_exception_handler(WorkspaceError, handler(400))
    app.add_exception_handler(DataError, handler(400))
    app.add_exception_handler(TooManySessions, handler(503))


def _binary(data: bytes) -> Response:
    return Response(data, media_type="application/octet-stream", headers=_NO_STORE)


def _display_name(name: str) -> str:
    """The user's file name for messages only (never used as a path): base name, printable."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:200]
    return base or "upload"


async def _receive_nifti(request: Request, folder: Path, name: str, limit: int) -> Path:
    """Stream the request body into ``folder`` (HTTP 413 past ``limit`` bytes) and return
    the file, named ``.nii.gz`` or ``.nii`` from its first bytes (gzip magic or not)."""
    too_large = HTTPException(413, f"{name}: larger than the upload limit of {limit / 2**20:g} MiB")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    raw, size, head = folder / "upload", 0, b""
    with raw.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            if len(head) < 2:
                head += chunk[:2]
            out.write(chunk)
    if size == 0:
        raise DataError(name, "empty upload")
    path = folder / ("upload.nii.gz" if head[:2] == _GZIP_MAGIC else "upload.nii")
    raw.rename(path)
    return path
