"""The web UI's API with FastAPI's test client: load, click, step, undo, export, bad uploads,
path traversal, failing steps, sessions and ``mecca serve``'s options."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from mecca_rllib.data.layouts import discover_cases, load_case  # noqa: E402
from mecca_rllib.data.nifti import load_volume  # noqa: E402
from mecca_rllib.data.phantoms import write_phantom_folder  # noqa: E402
from mecca_rllib.metrics import dice  # noqa: E402
from mecca_rllib.session import InteractiveSession  # noqa: E402
from mecca_rllib.web import commands  # noqa: E402
from mecca_rllib.web.app import create_app  # noqa: E402
from mecca_rllib.web.sessions import SessionNotFound, SessionStore, TooManySessions  # noqa: E402

NET_SHAPE = (8, 16, 16)
CASE_SHAPE = (10, 20, 20)  # (D, H, W) of the phantom cases
SCAN_SHAPE = (18, 26, 14)  # file (i, j, k) shape of the uploaded oblique scan
BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_phantom_folder(tmp_path_factory.mktemp("data") / "phantoms", 2, CASE_SHAPE)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> tuple[Path, bytes]:
    """A NIfTI with an anisotropic, oblique, axis-permuted affine and a bright blob."""
    affine = np.array([[0.0, -1.2, 0.3, 40.0], [0.1, 0.0, 2.5, -12.0], [0.9, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    grid = np.indices(SCAN_SHAPE).astype(np.float32)
    centre = (np.array(SCAN_SHAPE) / 2)[:, None, None, None]
    image = np.exp(-(((grid - centre) / 4.0) ** 2).sum(0)) + np.random.default_rng(0).normal(0, 0.05, SCAN_SHAPE)
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
    return path, path.read_bytes()


@pytest.fixture()
def app(checkpoint, data_dir):
    return create_app(checkpoint, data_dir, max_upload_bytes=1 << 20)


@pytest.fixture()
def client(app):
    with TestClient(app, base_url=BASE) as c:
        yield c


def new_session(client) -> str:
    resp = client.post("/api/sessions")
    assert resp.status_code == 201
    return resp.json()["session"]


def ok(resp, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else {}


def load(client, sid: str, name: str = "phantom_0000") -> dict:
    return ok(client.post(f"/api/sessions/{sid}/case", json={"name": name}))


def click(client, sid: str, voxel) -> dict:
    return ok(client.post(f"/api/sessions/{sid}/clicks", json={"voxel": list(voxel)}))


def step(client, sid: str, user_ms: float | None = None) -> dict:
    return ok(client.post(f"/api/sessions/{sid}/step", json={"user_ms": user_ms}))


def exported(client, sid: str) -> nib.Nifti1Image:
    resp = client.get(f"/api/sessions/{sid}/export")
    assert resp.status_code == 200, resp.text
    assert "attachment" in resp.headers["content-disposition"]
    return nib.Nifti1Image.from_bytes(gzip.decompress(resp.content))


FIRST_CLICKS = [(5, 10, 10), (4, 6, 12), (6, 13, 8)]  # canonical (d, h, w) voxels


# ---------------------------------------------------------------------------- page and info
def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_info_lists_cases_by_name(client):
    info = ok(client.get("/api/info"))
    assert info["cases"] == ["phantom_0000", "phantom_0001"]
    assert info["network_shape"] == list(NET_SHAPE)
    assert info["max_upload_bytes"] == 1 << 20


def test_foreign_host_header_is_refused(client):
    """Guard against DNS rebinding: a loopback server answers only loopback host names."""
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/info", headers={"host": "localhost:8765"}).status_code == 200


# ---------------------------------------------------------------------------- load, click, step
def test_loading_a_case_serves_its_image_and_reference(client, data_dir):
    sid = new_session(client)
    state = load(client, sid)
    assert state["shape"] == list(CASE_SHAPE) and state["steps_done"] == 0
    image = client.get(f"/api/sessions/{sid}/image")
    assert image.headers["content-type"] == "application/octet-stream"
    assert len(image.content) == np.prod(CASE_SHAPE)
    pixels = np.frombuffer(image.content, np.uint8)
    assert pixels.min() == 0 and pixels.max() == 255  # windowed to the full display range
    reference = np.frombuffer(client.get(f"/api/sessions/{sid}/reference").content, np.uint8)
    case = discover_cases(data_dir)[0]
    np.testing.assert_array_equal(reference.reshape(CASE_SHAPE), load_case(case)[1].array)


def test_click_step_undo_export_match_the_python_session(client, checkpoint, scan):
    path, data = scan
    sid = new_session(client)
    state = ok(client.post(f"/api/sessions/{sid}/upload?name=scan.nii.gz", content=data))
    volume = load_volume(path)
    assert state["shape"] == list(volume.shape) and state["original_shape"] == list(SCAN_SHAPE)
    assert state["reference"] is None

    clicks = [(9, 6, 13), (6, 9, 9), (12, 4, 16)]
    for voxel in clicks:
        state = click(client, sid, voxel)
    assert state["pending"] == [list(v) for v in clicks] and state["roi"] is None
    state = step(client, sid, user_ms=2500.0)
    assert state["steps_done"] == 1 and state["pending"] == [] and state["clicks"] == [list(v) for v in clicks]
    (record,) = state["history"]
    assert record["step"] == 1 and record["clicks"] == 3 and record["dice"] is None
    assert record["user_ms"] == 2500.0 and record["compute_ms"] >= record["model_ms"] > 0

    # The same clicks through InteractiveSession directly, in the file's own indices.
    session = InteractiveSession.from_checkpoint(checkpoint)
    session.start(path)
    session.click(volume.dhw_to_file_index(np.array(clicks)))
    result = session.step()
    assert state["roi"] == session.roi_grid.box.tolist() == state["result"]["box"]
    size = np.diff(np.array(state["result"]["box"]), axis=1).ravel()
    maps = np.frombuffer(client.get(f"/api/sessions/{sid}/maps").content, np.uint8).reshape(4, *size)
    np.testing.assert_array_equal(maps[2], result.roi_advice)
    np.testing.assert_array_equal(maps[3], result.roi_segmentation)
    assert [r["rank"] for r in state["result"]["regions"]] == [r.rank for r in result.regions]

    nifti = exported(client, sid)
    assert nifti.shape == SCAN_SHAPE
    np.testing.assert_allclose(nifti.affine, nib.load(path).affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nifti.dataobj), result.segmentation)

    # A second step, then undo back: last click, last step (its click pending again), ...
    inside = (8, 8, 10)
    click(client, sid, inside)
    assert step(client, sid)["steps_done"] == 2
    state = ok(client.post(f"/api/sessions/{sid}/undo"))
    assert state["steps_done"] == 1 and state["pending"] == [list(inside)] and len(state["history"]) == 1
    np.testing.assert_array_equal(np.asarray(exported(client, sid).dataobj), result.segmentation)
    state = ok(client.post(f"/api/sessions/{sid}/undo"))
    assert state["pending"] == [] and state["steps_done"] == 1
    state = ok(client.post(f"/api/sessions/{sid}/undo"))
    assert state["steps_done"] == 0 and state["result"] is None and state["roi"] is None
    assert state["pending"] == [list(v) for v in clicks]
    assert client.get(f"/api/sessions/{sid}/export").status_code == 409
    for _ in clicks:
        state = ok(client.post(f"/api/sessions/{sid}/undo"))
    assert state["pending"] == []
    resp = client.post(f"/api/sessions/{sid}/undo")
    assert resp.status_code == 400 and "nothing to undo" in resp.json()["detail"]


def test_dice_per_step_compares_with_the_case_label(client, data_dir):
    sid = new_session(client)
    state = load(client, sid)
    assert state["reference"] == "phantom_0000.nii.gz"
    for voxel in FIRST_CLICKS:
        click(client, sid, voxel)
    record = step(client, sid)["history"][0]
    segmentation = np.asarray(exported(client, sid).dataobj)
    label = np.asarray(nib.load(data_dir / "labels" / "phantom_0000.nii.gz").dataobj)
    assert record["dice"] == pytest.approx(dice(segmentation, label))


def test_uploaded_reference_label_enables_dice(client, data_dir):
    sid = new_session(client)
    image = (data_dir / "images" / "phantom_0001.nii.gz").read_bytes()
    ok(client.post(f"/api/sessions/{sid}/upload?name=p1.nii.gz", content=image))
    label = (data_dir / "labels" / "phantom_0001.nii.gz").read_bytes()
    state = ok(client.post(f"/api/sessions/{sid}/reference?name=p1_label.nii.gz", content=label))
    assert state["reference"] == "p1_label.nii.gz"
    for voxel in FIRST_CLICKS:
        click(client, sid, voxel)
    assert 0.0 <= step(client, sid)["history"][0]["dice"] <= 1.0

    other = (data_dir / "labels" / "phantom_0000.nii.gz").read_bytes()
    wrong = nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4))
    resp = client.post(f"/api/sessions/{sid}/reference?name=small.nii.gz", content=wrong.to_bytes())
    assert resp.status_code == 400 and "small.nii.gz" in resp.json()["detail"]
    assert "differs" in resp.json()["detail"]
    assert ok(client.post(f"/api/sessions/{sid}/reference?name=l0.nii.gz", content=other))["reference"] == "l0.nii.gz"


def test_bad_clicks_and_out_of_order_requests(client):
    sid = new_session(client)
    assert client.post(f"/api/sessions/{sid}/clicks", json={"voxel": [1, 1, 1]}).status_code == 409
    assert client.post(f"/api/sessions/{sid}/step", json={}).status_code == 409
    assert client.get(f"/api/sessions/{sid}/image").status_code == 409
    load(client, sid)
    resp = client.post(f"/api/sessions/{sid}/step", json={})
    assert resp.status_code == 400 and "click" in resp.json()["detail"]
    resp = client.post(f"/api/sessions/{sid}/clicks", json={"voxel": [10, 0, 0]})
    assert resp.status_code == 400 and "outside the volume" in resp.json()["detail"]
    assert client.post(f"/api/sessions/{sid}/clicks", json={"voxel": [1, 2]}).status_code == 422
    assert client.get(f"/api/sessions/{sid}/maps").status_code == 409
    assert client.get(f"/api/sessions/{sid}/reference").status_code == 200
    click(client, sid, (5, 10, 10))
    assert client.post(f"/api/sessions/{sid}/step", json={"user_ms": -1}).status_code == 422
    state = step(client, sid)
    assert state["roi"] == [[0, 10], [4, 17], [4, 17]]  # the click's voxel +- the 6-voxel margin
    resp = client.post(f"/api/sessions/{sid}/clicks", json={"voxel": [5, 10, 0]})
    assert resp.status_code == 400 and "region of interest" in resp.json()["detail"]
    assert client.post(f"/api/sessions/{sid}/step", json={}).status_code == 200  # no new click: fine


# ---------------------------------------------------------------------------- sessions
def test_tabs_are_separate_sessions(client):
    a, b = new_session(client), new_session(client)
    assert a != b and len(a) >= 20
    load(client, a, "phantom_0000")
    load(client, b, "phantom_0001")
    click(client, a, (5, 10, 10))
    assert ok(client.get(f"/api/sessions/{b}/state"))["pending"] == []
    assert ok(client.get(f"/api/sessions/{a}/state"))["name"] == "phantom_0000"
    assert ok(client.get(f"/api/sessions/{b}/state"))["name"] == "phantom_0001"
    assert client.delete(f"/api/sessions/{a}").status_code == 204
    resp = client.get(f"/api/sessions/{a}/state")
    assert resp.status_code == 404 and "reload the page" in resp.json()["detail"]
    assert client.get("/api/sessions/not-a-session/state").status_code == 404


def test_idle_sessions_expire(app, client):
    now = [1000.0]
    app.state.store.clock = lambda: now[0]
    idle, busy = new_session(client), new_session(client)
    now[0] += 1000
    ok(client.get(f"/api/sessions/{busy}/state"))  # used: its idle time starts again
    now[0] += 1000  # idle: 2000 s > the default 30 min; busy: 1000 s
    assert client.get(f"/api/sessions/{idle}/state").status_code == 404
    assert client.get(f"/api/sessions/{busy}/state").status_code == 200


def test_session_store_expiry_limit_and_ids():
    now = [0.0]
    store = SessionStore(object, idle_timeout_s=10, max_sessions=2, clock=lambda: now[0])
    a, _ = store.create()
    now[0] = 6
    b, _ = store.create()
    with pytest.raises(TooManySessions, match="2 sessions"):
        store.create()
    now[0] = 11  # a idle for 11 s, b for 5 s
    assert store.expire() == 1 and len(store) == 1
    with pytest.raises(SessionNotFound):
        store.get(a)
    store.get(b)
    store.create()  # room again
    with pytest.raises(ValueError, match="idle_timeout_s"):
        SessionStore(object, idle_timeout_s=0)


# ---------------------------------------------------------------------------- bad uploads
def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _four_d() -> bytes:
    return nib.Nifti1Image(np.zeros((6, 6, 6, 2), np.float32), np.eye(4)).to_bytes()


def _with_nan() -> bytes:
    image = np.ones((6, 6, 6), np.float32)
    image[2, 2, 2] = np.nan
    return nib.Nifti1Image(image, np.eye(4)).to_bytes()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (lambda scan: b"just some text, not an image", "not a readable NIfTI"),
        (lambda scan: gzip.compress(b"gzip, but not a NIfTI inside" * 20), "not a readable NIfTI"),
        (lambda scan: _truncated(scan), "truncated"),
        (lambda scan: _four_d(), "channel"),
        (lambda scan: _with_nan(), "NaN"),
        (lambda scan: b"", "empty upload"),
    ],
    ids=["text", "gzip-junk", "truncated", "4d", "nan", "empty"],
)
def test_bad_uploads_are_refused_with_a_clear_message(client, scan, payload, message):
    sid = new_session(client)
    load(client, sid)
    before = ok(client.get(f"/api/sessions/{sid}/state"))
    resp = client.post(f"/api/sessions/{sid}/upload?name=mine.nii.gz", content=payload(scan[1]))
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail.startswith("mine.nii.gz: ") and message in detail
    assert "/tmp" not in detail and "mecca-upload" not in detail  # no server paths
    assert ok(client.get(f"/api/sessions/{sid}/state")) == before  # the case stays loaded


def test_uploads_over_the_limit_are_refused(client, scan):
    sid = new_session(client)
    big = scan[1] + bytes(1 << 20)
    resp = client.post(f"/api/sessions/{sid}/upload?name=big.nii.gz", content=big)
    assert resp.status_code == 413 and "upload limit of 1 MiB" in resp.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(20):
            yield bytes(64 * 1024)

    resp = client.post(f"/api/sessions/{sid}/upload?name=big.nii", content=chunks())
    assert resp.status_code == 413
    assert ok(client.get(f"/api/sessions/{sid}/state")) == {"loaded": False}
    ok(client.post(f"/api/sessions/{sid}/upload?name=scan.nii.gz", content=scan[1]))  # still serving


def test_volumes_over_the_voxel_limit_are_refused_from_the_header(checkpoint, scan):
    from mecca_rllib.data.errors import DataError
    from mecca_rllib.policies.checkpoints import load_rl_module
    from mecca_rllib.web.workspace import Workspace

    workspace = Workspace(load_rl_module(checkpoint), max_voxels=int(np.prod(SCAN_SHAPE)) - 1)
    with pytest.raises(DataError, match=r"mine.nii.gz: volume of shape \(18, 26, 14\) has more than"):
        workspace.load_upload(scan[0], "mine.nii.gz")
    assert workspace.state() == {"loaded": False}


def test_uncompressed_upload_and_display_name(client, scan):
    img = nib.load(scan[0])
    raw = nib.Nifti1Image(np.asarray(img.dataobj), img.affine).to_bytes()  # .nii, no gzip
    sid = new_session(client)
    state = ok(client.post(f"/api/sessions/{sid}/upload?name=..%2F..%2Fetc%2Fscan.nii", content=raw))
    assert state["name"] == "scan.nii" and state["source"] == "upload"  # a display name only


# ---------------------------------------------------------------------------- path traversal
@pytest.mark.parametrize("name", [
    "../images/phantom_0000", "../../../../etc/passwd", "/etc/passwd", "phantom_0000/../phantom_0001",
    "..%2F..%2Fetc%2Fpasswd", "%2e%2e/labels/phantom_0000", "images/phantom_0000.nii.gz",
    "phantom_0000.nii.gz", "", "..\\..\\etc\\passwd",
])  # fmt: skip
def test_case_names_outside_the_listing_are_refused(client, name):
    sid = new_session(client)
    resp = client.post(f"/api/sessions/{sid}/case", json={"name": name})
    assert resp.status_code == 404 and "pick one from the list" in resp.json()["detail"]
    assert ok(client.get(f"/api/sessions/{sid}/state")) == {"loaded": False}


def test_absolute_path_of_a_real_case_is_refused(client, data_dir):
    sid = new_session(client)
    path = str(data_dir / "images" / "phantom_0000.nii.gz")
    assert client.post(f"/api/sessions/{sid}/case", json={"name": path}).status_code == 404


@pytest.mark.parametrize("url", [
    "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/app.py", "/static/%2e%2e%2fworkspace.py",
    "/static/..%5capp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
])  # fmt: skip
def test_static_files_do_not_escape_their_folder(client, url):
    resp = client.get(url)
    assert resp.status_code == 404
    assert "create_app" not in resp.text and "root:" not in resp.text


# ---------------------------------------------------------------------------- failing steps
def _snapshot(client, sid: str) -> tuple[dict, bytes | None, bytes | None]:
    state = ok(client.get(f"/api/sessions/{sid}/state"))
    maps = client.get(f"/api/sessions/{sid}/maps")
    nifti = client.get(f"/api/sessions/{sid}/export")
    return state, maps.content if maps.status_code == 200 else None, nifti.content if nifti.status_code == 200 else None


def _broken(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("where", ["policy", "after-step"])
@pytest.mark.parametrize("at_step", [1, 2])
def test_a_failing_step_leaves_the_session_as_before(client, app, monkeypatch, where, at_step):
    sid, twin = new_session(client), new_session(client)  # twin: the same clicks, no failure
    for s in (sid, twin):
        load(client, s)
        for voxel in FIRST_CLICKS:
            click(client, s, voxel)
        if at_step == 2:
            step(client, s)
            click(client, s, (5, 9, 11))
    before = _snapshot(client, sid)

    with monkeypatch.context() as patch:
        if where == "policy":
            patch.setattr(app.state.module, "policy_logits", _broken)
        else:  # after InteractiveSession.step succeeded, while the web layer scores it
            patch.setattr("mecca_rllib.web.workspace.dice", _broken)
        resp = client.post(f"/api/sessions/{sid}/step", json={"user_ms": 100})
    assert resp.status_code == 500
    assert "injected failure" in resp.json()["detail"] and "as before" in resp.json()["detail"]
    assert _snapshot(client, sid) == before

    # The next step gives exactly what it would have given without the failure.
    after, expected = step(client, sid), step(client, twin)
    assert after["steps_done"] == expected["steps_done"] == at_step
    assert after["clicks"] == expected["clicks"] and after["roi"] == expected["roi"]
    assert _snapshot(client, sid)[1:] == _snapshot(client, twin)[1:]


# ---------------------------------------------------------------------------- mecca serve
def test_serve_defaults_to_loopback_and_warns_elsewhere(monkeypatch, checkpoint, capsys):
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--checkpoint", str(checkpoint)])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert commands.host_warning("127.0.0.1") is None and commands.host_warning("localhost") is None
    assert commands.host_warning("::1") is None

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    assert commands.main(["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0", "--port", "9001"]) == 0
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0" in err and "no authentication" in err
    app, kw = runs[0]
    assert kw["host"] == "0.0.0.0" and kw["port"] == 9001
    with TestClient(app, base_url="http://10.1.2.3") as c:  # any host name when bound elsewhere
        assert c.get("/api/info").status_code == 200

    assert commands.main(["serve", "--checkpoint", str(checkpoint)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_serve_reports_a_bad_checkpoint_or_data_folder(tmp_path, checkpoint, capsys):
    assert commands.main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert commands.main(["serve", "--checkpoint", str(checkpoint), "--data", str(tmp_path)]) == 2
    assert "unknown dataset layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        commands.main(["serve", "--checkpoint", str(checkpoint), "--port", "70000"])


def test_segmentation_export_keeps_the_file_header(client, scan):
    sid = new_session(client)
    ok(client.post(f"/api/sessions/{sid}/upload?name=scan.nii.gz", content=scan[1]))
    click(client, sid, (9, 6, 13))
    step(client, sid)
    nifti = exported(client, sid)
    source = nib.load(scan[0])
    assert nifti.get_data_dtype() == np.uint8
    assert nifti.header.get_qform(coded=True)[1] == source.header.get_qform(coded=True)[1]
    assert io.BytesIO(client.get(f"/api/sessions/{sid}/export").content).read(2) == b"\x1f\x8b"


def test_background_clicks_reach_a_split_hint_model_and_survive_undo(tmp_path, make_tiny_module, data_dir):
    """A model trained with hint_channels=2 gets each click's side (shift-click in the page
    sends foreground=false); undoing a step gives its clicks back with their sides."""
    from mecca_rllib.policies.checkpoints import save_module

    split = save_module(make_tiny_module(NET_SHAPE, hint_channels=2), tmp_path / "split")
    with TestClient(create_app(split, data_dir), base_url=BASE) as c:
        sid = new_session(c)
        load(c, sid)
        click(c, sid, FIRST_CLICKS[0])
        state = ok(c.post(f"/api/sessions/{sid}/clicks",
                          json={"voxel": list(FIRST_CLICKS[1]), "foreground": False}))
        assert state["split_hints"] and state["pending_foreground"] == [True, False]
        state = step(c, sid)
        assert state["clicks_foreground"] == [True, False] and state["pending_foreground"] == []
        state = ok(c.post(f"/api/sessions/{sid}/undo"))
        assert state["pending_foreground"] == [True, False] and state["clicks_foreground"] == []
