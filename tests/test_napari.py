"""The napari plugin (issue 17): the MECCA dock widget in a real, headless napari viewer.

Qt runs on its ``offscreen`` platform; napari's canvas still needs OpenGL, which Qt's
offscreen platform gets through GLX, so a private Xvfb is started when there is no
display (``mecca_rllib.napari_plugin.headless``). The module skips, with the reason, when
the ``[napari]`` extra (napari, a Qt binding, pytest-qt) or Xvfb is missing.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

import numpy as np  # noqa: E402
import pytest  # noqa: E402

EXTRA = "needs the napari extra: pip install -e '.[napari]'"
napari = pytest.importorskip("napari", reason=f"napari is not installed ({EXTRA})")
pytest.importorskip("pytestqt", reason=f"pytest-qt is not installed ({EXTRA})")
pytest.importorskip("qtpy", reason=f"no Qt binding ({EXTRA})")

from mecca_rllib.data.phantoms import make_phantom  # noqa: E402
from mecca_rllib.metrics import dice  # noqa: E402
from mecca_rllib.napari_plugin.headless import ensure_display  # noqa: E402
from mecca_rllib.policies.checkpoints import save_module  # noqa: E402

SHAPE = (8, 16, 16)
SCALE = (2.0, 0.5, 0.75)  # mm per voxel along (D, H, W): non-unit and anisotropic
TRANSLATE = (5.0, -3.0, 1.0)
FIRST_CLICKS = np.array([[3, 5, 5], [4, 7, 4], [4, 5, 8]], float)  # image voxels
TIMEOUT_MS = 120_000  # a loaded 2-core machine


@pytest.fixture(scope="session", autouse=True)
def _display():
    """An X display for napari's OpenGL canvas; before the session's QApplication."""
    if ensure_display() is None:
        pytest.skip("napari's canvas needs OpenGL through an X server: no DISPLAY and no Xvfb "
                    "(apt-get install xvfb)")


@pytest.fixture
def notifications():
    """The napari notifications dispatched during a test, oldest first."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def _errors(notifications) -> list[str]:
    return [str(n.message) for n in notifications if str(n.severity).lower().endswith("error")]


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def _open(make_napari_viewer, qtbot, checkpoint):
    """A viewer with a phantom image (non-unit scale, translated), its reference label and
    the MECCA widget from the plugin's manifest, the model loaded."""
    viewer = make_napari_viewer()
    image, label = make_phantom(SHAPE, rng=3)
    layer = viewer.add_image(image, name="scan", scale=SCALE, translate=TRANSLATE)
    viewer.add_labels(label, name="truth", scale=SCALE, translate=TRANSLATE)
    _, widget = viewer.window.add_plugin_dock_widget("mecca-rllib", "MECCA")
    viewer.layers.selection.active = layer
    assert widget.load_model(checkpoint) is not None
    _wait(qtbot, widget)
    assert widget.session is not None, "the model did not load"
    assert widget.image_choice.currentText() == "scan"
    return viewer, widget, label


def _outputs(widget) -> dict[str, np.ndarray]:
    from mecca_rllib.napari_plugin._widget import OUTPUT_NAMES

    out = {}
    for name in OUTPUT_NAMES:
        layer = widget.output_layer(name)
        out[name] = None if layer is None else np.array(layer.data)
    return out


def _step(qtbot, widget) -> None:
    assert widget.step() is not None, "Step did not start a worker"
    assert widget.busy and widget.busy_bar.isVisibleTo(widget)
    _wait(qtbot, widget)
    assert not widget.busy_bar.isVisibleTo(widget)


def test_manifest_contributes_the_mecca_widget():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("mecca-rllib")
    assert [w.display_name for w in manifest.contributions.widgets] == ["MECCA"]


def test_step_shows_results_as_layers_with_the_image_transform(make_napari_viewer, qtbot, notifications,
                                                               tiny_checkpoint):
    from napari.layers import Image, Labels

    from mecca_rllib.napari_plugin._widget import OUTPUT_NAMES

    viewer, widget, label = _open(make_napari_viewer, qtbot, tiny_checkpoint)
    widget.add_click_layers()
    clicks = widget.points_choice.layer(viewer.layers)
    np.testing.assert_allclose(clicks.scale, SCALE)  # the click layer has the image's transform
    clicks.add(FIRST_CLICKS)
    # A second click source in plain world coordinates (unit scale): mapped through world mm.
    world = viewer.add_points(np.array([[5.0 + 2 * 3, -3.0 + 0.5 * 6, 1.0 + 0.75 * 6]]), name="world")
    widget.reference_choice.setCurrentText("truth")

    _step(qtbot, widget)
    assert _errors(notifications) == []
    session = widget.session
    result = session.result
    assert result.step == 1 and session.steps_done == 1
    np.testing.assert_array_equal(session.clicks, FIRST_CLICKS.astype(int))

    for name, title in OUTPUT_NAMES.items():
        layer = viewer.layers[title]
        assert isinstance(layer, Labels if name in ("segmentation", "advice") else Image)
        assert layer.data.shape == SHAPE
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        np.testing.assert_array_equal(layer.data, getattr(result, name))
    out = _outputs(widget)
    assert out["probability"].dtype == np.float32
    assert 0 <= out["probability"].min() and out["probability"].max() <= 1
    assert 0 <= out["confidence"].min() and out["confidence"].max() <= 1
    np.testing.assert_array_equal(out["segmentation"], out["probability"] > 0.5)
    assert set(np.unique(out["advice"])) <= set(range(6))

    # The guide's five regions, ranked, with their mean confidence.
    table = widget.advice_table
    assert table.rowCount() == len(result.regions) == 5
    assert [table.item(r, 0).text() for r in range(5)] == ["1", "2", "3", "4", "5"]
    for row, region in enumerate(result.regions):
        assert table.item(row, 1).text() == f"{region.mean_confidence:.3f}"
    # Dice against the chosen reference, one row per step.
    assert widget.steps_table.rowCount() == 1
    expected = dice(result.segmentation, label)
    assert widget.history[0].dice == pytest.approx(expected)
    assert widget.steps_table.item(0, 2).text() == f"{expected:.3f}"

    # The world-coordinate layer as the click source: its point is image voxel (3, 6, 6).
    widget.points_choice.setCurrentText(world.name)
    _step(qtbot, widget)
    assert _errors(notifications) == []
    assert session.clicks.tolist()[-1] == [3, 6, 6]
    assert widget.steps_table.rowCount() == 2


def test_undo_and_reset_restore_the_layers(make_napari_viewer, qtbot, notifications, tiny_checkpoint):
    viewer, widget, _ = _open(make_napari_viewer, qtbot, tiny_checkpoint)
    n_layers = len(viewer.layers)
    widget.add_click_layers()
    clicks = widget.points_choice.layer(viewer.layers)
    clicks.add(FIRST_CLICKS)
    _step(qtbot, widget)
    first = _outputs(widget)
    first_clicks = widget.session.clicks
    clicks.add([[5, 6, 6]])
    _step(qtbot, widget)
    second = _outputs(widget)
    assert len(widget.session.clicks) == 4
    assert not np.array_equal(first["probability"], second["probability"])  # undo is tested

    widget.undo()
    assert widget.session.steps_done == 1 and len(widget.history) == 1
    assert widget.steps_table.rowCount() == 1
    np.testing.assert_array_equal(widget.session.clicks, first_clicks)
    for name, data in _outputs(widget).items():
        np.testing.assert_array_equal(data, first[name], err_msg=name)
    assert len(clicks.data) == 4  # the undone step's click stays in the layer, pending again

    widget.undo()  # back to the start: no results to show
    assert widget.session.steps_done == 0
    assert all(v is None for v in _outputs(widget).values())
    assert len(viewer.layers) == n_layers + 1  # the image, the reference and the clicks
    assert widget.advice_table.rowCount() == 0

    _step(qtbot, widget)  # all four points are pending again: the first step uses them all
    assert len(widget.session.clicks) == 4
    widget.reset()
    assert widget.session.steps_done == 0 and widget.history == []
    assert all(v is None for v in _outputs(widget).values())
    assert _errors(notifications) == []


def test_errors_are_notifications_and_leave_the_layers(make_napari_viewer, qtbot, notifications,
                                                       tiny_checkpoint, tmp_path):
    viewer, widget, _ = _open(make_napari_viewer, qtbot, tiny_checkpoint)
    widget.add_click_layers()
    clicks = widget.points_choice.layer(viewer.layers)
    clicks.add(FIRST_CLICKS)
    _step(qtbot, widget)
    before = _outputs(widget)
    names = [layer.name for layer in viewer.layers]
    session_clicks = widget.session.clicks

    def unchanged():
        assert [layer.name for layer in viewer.layers] == names
        for name, data in _outputs(widget).items():
            np.testing.assert_array_equal(data, before[name], err_msg=name)
        assert widget.session.steps_done == 1 and len(widget.history) == 1
        np.testing.assert_array_equal(widget.session.clicks, session_clicks)

    # A click outside the volume: refused before the worker starts.
    clicks.add([[3, 20, 5]])
    assert widget.step() is None
    assert "outside the image 'scan' of shape (8, 16, 16)" in _errors(notifications)[-1]
    unchanged()
    clicks.data = clicks.data[:-1]

    # A click inside the volume but outside the region of interest: refused by the session
    # in the worker thread, which rolls the session back.
    clicks.add([[4, 15, 15]])
    _step(qtbot, widget)
    assert "outside the region of interest" in _errors(notifications)[-1]
    unchanged()
    clicks.data = clicks.data[:-1]

    # A bad checkpoint: the loaded model stays.
    model = widget.session
    widget.load_model(tmp_path / "no-such-checkpoint")
    _wait(qtbot, widget)
    assert "cannot load a model from" in _errors(notifications)[-1]
    assert "no-such-checkpoint" in _errors(notifications)[-1]
    assert widget.session is model
    unchanged()

    # A 4D layer chosen as the image.
    viewer.add_image(np.zeros((2, *SHAPE), np.float32), name="movie")
    names.append("movie")
    widget.image_choice.setCurrentText("movie")
    assert widget.step() is None
    assert "'movie' is 4D" in _errors(notifications)[-1]
    unchanged()
    assert len(_errors(notifications)) == 4


def test_background_clicks_for_split_hint_models(make_napari_viewer, qtbot, notifications,
                                                 make_tiny_module, tmp_path):
    checkpoint = save_module(make_tiny_module(hint_channels=2), tmp_path / "split")
    viewer, widget, _ = _open(make_napari_viewer, qtbot, checkpoint)
    assert widget.session.hint_channels == 2 and widget.background_choice.isEnabled()
    widget.add_click_layers()
    fg = widget.points_choice.layer(viewer.layers)
    bg = widget.background_choice.layer(viewer.layers)
    assert fg is not None and bg is not None and fg.name != bg.name
    fg.add(FIRST_CLICKS[:2])
    bg.add(FIRST_CLICKS[2:])
    _step(qtbot, widget)
    assert _errors(notifications) == []
    np.testing.assert_array_equal(widget.session.clicks, FIRST_CLICKS.astype(int))
    assert widget.session.click_foreground.tolist() == [True, True, False]
