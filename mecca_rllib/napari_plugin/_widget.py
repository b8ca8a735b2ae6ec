"""The "MECCA" dock widget: an :class:`~mecca_rllib.session.InteractiveSession` in napari.

The widget drives the session like the browser UI's workspace (:mod:`mecca_rllib.web.workspace`):

- the *image* is a 3D napari Image layer; its array is taken as ``(D, H, W)`` and its
  ``scale``/``translate`` become the session's affine (:func:`._core.layer_affine`), so the
  session sees the voxel spacing the user set;
- *clicks* are the points of a Points layer (a second Points layer holds background clicks
  for models trained with ``hint_channels=2``). Points live in their own layer's data
  coordinates; they are mapped to world coordinates and then into the image's voxel grid
  (``data_to_world`` then the image's ``world_to_data``), so a Points layer with another
  scale works too. The points not yet used by a step are *pending*: Step sends them;
- *Step* runs click + step in napari's worker thread (the viewer stays responsive; a busy
  bar shows meanwhile), then shows the results as layers with the image's transform:
  ``MECCA segmentation`` (Labels), ``MECCA probability`` and ``MECCA confidence`` (Image),
  ``MECCA advice`` (Labels, region r = rank r);
- *Undo* goes back to the previous step (its clicks stay in the Points layers, pending
  again, as in the browser UI); *Reset* goes back to the start (every point pending).

A failure (a bad checkpoint, a click outside the volume, a 4D layer, ...) is shown as a
napari error notification naming the problem; the session and the layers stay as they were.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mecca_rllib.metrics import dice
from mecca_rllib.napari_plugin._core import Click, layer_affine, new_clicks
from mecca_rllib.session import InteractiveSession, StepResult

if TYPE_CHECKING:
    import napari

__all__ = ["OUTPUT_NAMES", "MeccaWidget", "StepRecord"]

#: Output layer names, by the :class:`StepResult` field they show.
OUTPUT_NAMES = {
    "segmentation": "MECCA segmentation",
    "probability": "MECCA probability",
    "confidence": "MECCA confidence",
    "advice": "MECCA advice",
}
_NONE = "(none)"


@dataclass(frozen=True)
class StepRecord:
    """One row of the widget's step table."""

    step: int  #: 1 for the first step
    clicks: int  #: clicks sent with this step
    dice: float | None  #: Dice with the reference Labels layer (None without one)
    compute_ms: float  #: wall time of the step in the worker (clicks, ROI set-up, step)
    result: StepResult


@dataclass(frozen=True)
class _StepJob:
    """Everything the worker needs; gathered and checked in the GUI thread."""

    session: InteractiveSession
    image: Image  # the layer the session works on (not touched in the worker)
    start: tuple[np.ndarray, np.ndarray] | None  # (image array, affine) for a new session
    points: np.ndarray  # int (K, 3) pending clicks, image voxel indices
    foreground: np.ndarray  # bool (K,)
    reference: np.ndarray | None  # the reference label, same shape as the image


@dataclass(frozen=True)
class _StepDone:
    session: InteractiveSession
    image: Image
    started: bool
    result: StepResult
    clicks: int
    dice: float | None
    compute_ms: float


@dataclass(frozen=True)
class _Failed:
    message: str


def _message(err: BaseException) -> str:
    """A notification text: the message of the errors the library raises for bad input,
    the type and message of anything else."""
    if isinstance(err, (ValueError, RuntimeError, OSError)) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _load_job(path: str) -> Any:
    """Worker: load a checkpoint or exported module and check it drives a session (an
    export loads as pure torch, without Ray)."""
    try:
        return InteractiveSession.from_checkpoint(path)  # validates policy_logits/confidence/shape
    except Exception as err:  # noqa: BLE001 - shown to the user as a notification
        return _Failed(f"MECCA: cannot load a model from {path}: {_message(err)}")


def _step_job(job: _StepJob) -> _StepDone | _Failed:
    """Worker: (start,) click, step; on failure the session is left as it was."""
    session = job.session
    t0 = time.perf_counter()
    steps_before = session.steps_done if job.start is None else 0
    try:
        if job.start is not None:
            array, affine = job.start
            session.start(array, affine=affine)
        if len(job.points):
            foreground = job.foreground if session.hint_channels == 2 else None
            session.click(job.points, foreground=foreground)
        result = session.step()
        for name in OUTPUT_NAMES:  # assemble the full-size maps here, not in the GUI thread
            getattr(result, name)
        score = None if job.reference is None else float(dice(result.segmentation, job.reference))
    except Exception as err:  # noqa: BLE001 - shown to the user as a notification
        if job.start is None:  # a fresh session is simply dropped
            if session.steps_done > steps_before:
                session.undo()
            else:
                session.discard_clicks()
        return _Failed(f"MECCA step failed: {_message(err)}")
    return _StepDone(session, job.image, job.start is not None, result, len(job.points), score,
                     1e3 * (time.perf_counter() - t0))


class _LayerChoice(QComboBox):
    """A combo box of the viewer's layers of one type (by name), kept up to date."""

    def __init__(self, kinds: tuple[type, ...], optional: bool, exclude: Any) -> None:
        super().__init__()
        self.kinds, self.optional, self.exclude = kinds, optional, exclude
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def refresh(self, layers, prefer: Layer | None = None) -> None:
        current = self.currentText()
        names = [layer.name for layer in layers
                 if isinstance(layer, self.kinds) and not self.exclude(layer)]
        self.blockSignals(True)
        self.clear()
        if self.optional:
            self.addItem(_NONE)
        self.addItems(names)
        if prefer is not None and prefer.name in names:
            self.setCurrentText(prefer.name)
        elif current and (current in names or current == _NONE):
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self, layers) -> Layer | None:
        name = self.currentText()
        if not name or name == _NONE or name not in layers:
            return None
        return layers[name]


class MeccaWidget(QWidget):
    """The MECCA dock widget (see the module docstring).

    The public methods are what the buttons call; each returns the started worker (or
    ``None`` when nothing was started) so that scripts and tests can wait for it.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: InteractiveSession | None = None  # the loaded model, maybe on a volume
        self.model_path: str | None = None
        self.history: list[StepRecord] = []
        self._session_key: tuple | None = None  # the image (and transform) the session is on
        self._session_layer: Image | None = None
        self._outputs: dict[str, Layer] = {}
        self._worker = None
        self._build()
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self._on_layers_changed)
        for layer in layers:
            layer.events.name.connect(self._refresh_layers)
        layers.selection.events.active.connect(self._on_active)
        self._refresh_layers()
        self._update_enabled()

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("checkpoint or exported model folder")
        self.browse_button = QPushButton("Browse…")
        self.load_button = QPushButton("Load")
        self.model_label = QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(self.browse_button)
        row.addWidget(self.load_button)

        is_output = self._is_output
        self.image_choice = _LayerChoice((Image,), optional=False, exclude=is_output)
        self.points_choice = _LayerChoice((Points,), optional=False, exclude=is_output)
        self.background_choice = _LayerChoice((Points,), optional=True, exclude=is_output)
        self.reference_choice = _LayerChoice((Labels,), optional=True, exclude=is_output)
        self.new_points_button = QPushButton("New click layers")

        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("", self.model_label)
        form.addRow("Image", self.image_choice)
        form.addRow("Clicks", self.points_choice)
        form.addRow("Background clicks", self.background_choice)
        form.addRow("", self.new_points_button)
        form.addRow("Reference", self.reference_choice)

        self.step_button = QPushButton("Step")
        self.undo_button = QPushButton("Undo")
        self.reset_button = QPushButton("Reset")
        buttons = QHBoxLayout()
        for b in (self.step_button, self.undo_button, self.reset_button):
            buttons.addWidget(b)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate: a busy indicator
        self.busy_bar.setMaximumHeight(8)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        self.advice_table = _table(["rank", "mean conf.", "voxels", "centroid (data)"])
        self.advice_table.cellDoubleClicked.connect(self._go_to_region)
        self.advice_table.setToolTip("The guide's least confident regions; double-click to go there")
        self.steps_table = _table(["step", "clicks", "Dice", "ms"])

        advice_box = QGroupBox("Advice regions")
        QVBoxLayout(advice_box).addWidget(self.advice_table)
        steps_box = QGroupBox("Steps")
        QVBoxLayout(steps_box).addWidget(self.steps_table)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(advice_box)
        layout.addWidget(steps_box)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse)
        self.load_button.clicked.connect(lambda: self.load_model(self.path_edit.text()))
        self.path_edit.returnPressed.connect(lambda: self.load_model(self.path_edit.text()))
        self.new_points_button.clicked.connect(self.add_click_layers)
        self.step_button.clicked.connect(self.step)
        self.undo_button.clicked.connect(self.undo)
        self.reset_button.clicked.connect(self.reset)
        self.reference_choice.currentTextChanged.connect(self._on_reference_changed)

    def _is_output(self, layer: Layer) -> bool:
        return any(_real(layer) is out for out in self._outputs.values())

    @property
    def busy(self) -> bool:
        """A worker (model loading or a step) is running."""
        return self._worker is not None

    def _set_busy(self, worker, text: str) -> None:
        self._worker = worker
        self.busy_bar.setVisible(worker is not None)
        self.status_label.setText(text)
        self._update_enabled()

    def _update_enabled(self) -> None:
        idle = self._worker is None
        loaded = self.session is not None
        self.load_button.setEnabled(idle)
        self.step_button.setEnabled(idle and loaded)
        self.undo_button.setEnabled(idle and loaded and bool(self.history))
        self.reset_button.setEnabled(idle and loaded and self._session_key is not None)
        two = loaded and self.session.hint_channels == 2
        self.background_choice.setEnabled(two)
        self.background_choice.setToolTip(
            "background clicks (this model has separate foreground/background hints)" if two
            else "only for models trained with hint_channels=2")

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MECCA checkpoint or exported model")
        if path:
            self.path_edit.setText(path)

    # ------------------------------------------------------------------ layers
    def _on_layers_changed(self, event=None) -> None:
        value = getattr(event, "value", None)
        if getattr(event, "type", None) == "inserted" and isinstance(value, Layer):
            value.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, event=None) -> None:
        layers = self.viewer.layers
        active = layers.selection.active
        prefer = active if isinstance(active, Image) and not self.image_choice.currentText() else None
        self.image_choice.refresh(layers, prefer)
        self.points_choice.refresh(layers)
        self.background_choice.refresh(layers)
        self.reference_choice.refresh(layers)

    def _on_active(self, event=None) -> None:
        """Follow the active Image layer while no step has been done on the current one."""
        active = self.viewer.layers.selection.active
        if (isinstance(active, Image) and not self.busy and not self.history
                and not self._is_output(active)):
            self.image_choice.setCurrentText(active.name)

    def image_layer(self) -> Image | None:
        return self.image_choice.layer(self.viewer.layers)

    def add_click_layers(self) -> None:
        """Add empty Points layers for clicks (and background clicks for split-hint models)
        with the image's transform, and choose them."""
        image = self.image_layer()
        kwargs = {} if image is None else _transform(image)
        ndim = 3 if image is None else image.ndim
        fg = self.viewer.add_points(np.zeros((0, ndim)), name="MECCA clicks", face_color="lime",
                                    size=2, ndim=ndim, **kwargs)
        self.points_choice.setCurrentText(fg.name)
        if self.session is not None and self.session.hint_channels == 2:
            bg = self.viewer.add_points(np.zeros((0, ndim)), name="MECCA background clicks",
                                        face_color="magenta", size=2, ndim=ndim, **kwargs)
            self.background_choice.setCurrentText(bg.name)
        self.viewer.layers.selection.active = fg
        fg.mode = "add"

    # ------------------------------------------------------------------ actions
    def load_model(self, path: str | Path):
        """Load a checkpoint or exported model folder (in the worker thread)."""
        path = str(path).strip()
        if self.busy:
            return None
        if not path:
            show_error("MECCA: enter the path of a checkpoint or exported model folder first")
            return None
        worker = create_worker(_load_job, path, _start_thread=False)
        worker.returned.connect(lambda out: self._loaded(out, path))
        worker.finished.connect(self._done)
        self._set_busy(worker, f"loading {path} …")
        worker.start()
        return worker

    def _loaded(self, out: Any, path: str) -> None:
        if isinstance(out, _Failed):
            show_error(out.message)
            return
        self.session, self.model_path = out, path
        self._forget_volume()
        s = out
        self.model_label.setText(
            f"{Path(path).name}: network shape {s.shape}, "
            f"{'foreground + background hints' if s.hint_channels == 2 else 'one hint channel'}")
        self.path_edit.setText(path)

    def _done(self) -> None:
        self._set_busy(None, self._summary())

    def step(self):
        """One interaction step with the pending clicks (in the worker thread)."""
        if self.busy:
            return None
        try:
            job = self._prepare_step()
        except ValueError as err:
            show_error(f"MECCA: {err}")
            return None
        worker = create_worker(_step_job, job, _start_thread=False)
        worker.returned.connect(self._stepped)
        worker.finished.connect(self._done)
        self._set_busy(worker, "stepping …")
        worker.start()
        return worker

    def _prepare_step(self) -> _StepJob:
        """Check the inputs and gather the job in the GUI thread; ValueError names a problem."""
        if self.session is None:
            raise ValueError("load a checkpoint or exported model first")
        image = self.image_layer()
        if image is None:
            raise ValueError("add a 3D Image layer and choose it as the image")
        array = _image_array(image)
        key = _image_key(image)
        start = None
        session = self.session
        if key != self._session_key:  # a new image (or transform): a fresh session on it
            session = InteractiveSession(self.session.module, explore=self.session.explore)
            start = (array, layer_affine(image.scale, image.translate))
        current = self._current_clicks(image, array.shape)
        used = [] if start is not None else _used_clicks(self.session)
        pending, missing = new_clicks(current, used)
        if missing:
            show_warning(f"MECCA: {len(missing)} click(s) used by earlier steps were deleted "
                         "from the Points layers; they stay in effect until Undo or Reset")
        if not pending and (start is not None or session.roi_grid is None):
            raise ValueError(
                f"add clicks on the object's boundary to the Points layer "
                f"'{self.points_choice.currentText() or '(none)'}' first: the first clicks "
                "define the region of interest")
        reference = self._reference_array(array.shape)
        points = np.array([c[:3] for c in pending], np.int64).reshape(-1, 3)
        foreground = np.array([c[3] for c in pending], bool)
        return _StepJob(session, image, start, points, foreground, reference)

    def _current_clicks(self, image: Image, shape: tuple[int, ...]) -> list[Click]:
        """All points of the click layers as rounded image voxel indices with their side."""
        layers = [(self.points_choice.layer(self.viewer.layers), True)]
        if self.session.hint_channels == 2:
            layers.append((self.background_choice.layer(self.viewer.layers), False))
        if layers[0][0] is None:
            raise ValueError("choose a Points layer with the clicks (or press 'New click layers')")
        if len(layers) == 2 and layers[1][0] is not None and _real(layers[1][0]) is _real(layers[0][0]):
            raise ValueError("the click and background click layers must be different Points layers")
        clicks: list[Click] = []
        for layer, foreground in layers:
            if layer is None:
                continue
            for n, point in enumerate(np.asarray(layer.data, float)):
                world = layer.data_to_world(point)
                voxel = np.asarray(image.world_to_data(world), float)[-3:]
                if not np.isfinite(voxel).all():
                    raise ValueError(f"point {n} of Points layer '{layer.name}' has a NaN coordinate")
                idx = np.rint(voxel)
                if np.any(idx < 0) or np.any(idx >= np.asarray(shape)):
                    raise ValueError(
                        f"click {n} of Points layer '{layer.name}' at voxel "
                        f"{tuple(round(float(v), 2) for v in voxel)} lies outside the image "
                        f"'{image.name}' of shape {tuple(shape)}: delete or move it")
                clicks.append((*(int(v) for v in idx), foreground))
        return clicks

    def _reference_array(self, shape: tuple[int, ...]) -> np.ndarray | None:
        ref = self.reference_choice.layer(self.viewer.layers)
        if ref is None:
            return None
        data = np.asarray(ref.data[0] if ref.multiscale else ref.data)
        if data.shape != tuple(shape):
            raise ValueError(f"the reference Labels layer '{ref.name}' has shape {data.shape}, "
                             f"the image has shape {tuple(shape)}")
        return data > 0

    def _stepped(self, out: _StepDone | _Failed) -> None:
        if isinstance(out, _Failed):
            show_error(out.message)
            return
        try:
            if out.started:
                self._forget_volume()
                self.session = out.session
                self._session_layer = _real(out.image)
                self._session_key = _image_key(out.image)
            self.history.append(StepRecord(out.result.step, out.clicks, out.dice,
                                           out.compute_ms, out.result))
            self._show(out.result)
        except Exception as err:  # noqa: BLE001 - never lose the error in the event loop
            show_error(f"MECCA: showing the result failed: {_message(err)}")

    def undo(self) -> None:
        """Back to the previous step (its clicks stay in the Points layers, pending)."""
        if self.busy or self.session is None or self._session_key is None:
            return
        if not self.history:
            show_info("MECCA: nothing to undo")
            return
        result = self.session.undo()
        del self.history[self.session.steps_done:]
        self._show(result)

    def reset(self) -> None:
        """Back to the start of the image: no steps; every point is pending again."""
        if self.busy or self.session is None or self._session_key is None:
            return
        self.session.reset()
        self.history.clear()
        self._show(None)

    def _forget_volume(self) -> None:
        self._session_key, self._session_layer = None, None
        self.history.clear()
        self._show(None)

    # ------------------------------------------------------------------ outputs
    def output_layer(self, name: str) -> Layer | None:
        """The output layer of a :class:`StepResult` field (``"segmentation"``, ...), if shown."""
        layer = self._outputs.get(name)
        return layer if layer is not None and layer in self.viewer.layers else None

    def _show(self, result: StepResult | None) -> None:
        """Output layers, advice table and step table for ``result`` (None: remove them)."""
        if result is None:
            for name in list(self._outputs):
                layer = self.output_layer(name)
                if layer is not None:
                    self.viewer.layers.remove(layer)
            self._outputs.clear()
        else:
            image = self._session_layer
            for name, title in OUTPUT_NAMES.items():
                data = np.array(getattr(result, name))  # writable copy (Labels can be painted)
                layer = self.output_layer(name)
                if layer is None:
                    self._outputs[name] = _real(self._add_output(name, title, data, image))
                else:
                    for attr, value in _transform(image).items():  # each set redraws: only changes
                        if not np.array_equal(np.asarray(getattr(layer, attr)), np.asarray(value)):
                            setattr(layer, attr, value)
                    layer.data = data
            if image is not None and image in self.viewer.layers:
                self.viewer.layers.selection.active = self.points_choice.layer(self.viewer.layers) or image
        self._fill_advice(result)
        self._fill_steps()
        self._update_enabled()
        self.status_label.setText(self._summary())

    def _add_output(self, name: str, title: str, data: np.ndarray, image: Image) -> Layer:
        kwargs = _transform(image)
        if name == "segmentation":
            return self.viewer.add_labels(data, name=title, opacity=0.45, **kwargs)
        if name == "advice":
            layer = self.viewer.add_labels(data, name=title, opacity=0.9, **kwargs)
            layer.contour = 1  # outlines: the segmentation stays visible underneath
            return layer
        if name == "probability":
            return self.viewer.add_image(data, name=title, colormap="magma", contrast_limits=(0, 1),
                                         blending="additive", opacity=0.6, visible=False, **kwargs)
        return self.viewer.add_image(data, name=title, colormap="inferno", contrast_limits=(0, 1),
                                     blending="translucent", opacity=0.6, visible=False, **kwargs)

    def _fill_advice(self, result: StepResult | None) -> None:
        regions = () if result is None else result.regions
        self.advice_table.setRowCount(len(regions))
        for row, r in enumerate(regions):
            centroid = ", ".join(f"{v:.0f}" for v in r.centroid)
            for col, text in enumerate((str(r.rank), f"{r.mean_confidence:.3f}", str(r.size),
                                        f"({centroid})")):
                self.advice_table.setItem(row, col, _item(text))

    def _fill_steps(self) -> None:
        self.steps_table.setRowCount(len(self.history))
        for row, rec in enumerate(self.history):
            score = "–" if rec.dice is None else f"{rec.dice:.3f}"
            for col, text in enumerate((str(rec.step), str(rec.clicks), score,
                                        f"{rec.compute_ms:.0f}")):
                self.steps_table.setItem(row, col, _item(text))

    def _on_reference_changed(self, _text: str = "") -> None:
        """Recompute the Dice column for the steps done so far with the chosen reference."""
        if not self.history or self.busy:
            return
        try:
            ref = self._reference_array(self.history[-1].result.segmentation.shape)
        except ValueError as err:
            show_error(f"MECCA: {err}")
            ref = None
        self.history = [
            StepRecord(r.step, r.clicks, None if ref is None else float(dice(r.result.segmentation, ref)),
                       r.compute_ms, r.result)
            for r in self.history
        ]
        self._fill_steps()

    def _go_to_region(self, row: int, _col: int) -> None:
        """Move the sliders to an advice region's centroid."""
        result = self.session.result if self.session is not None and self._session_key else None
        image = self._session_layer
        if result is None or image is None or row >= len(result.regions):
            return
        world = image.data_to_world(result.regions[row].centroid)
        offset = self.viewer.dims.ndim - len(world)
        for axis, value in enumerate(world):
            self.viewer.dims.set_point(axis + offset, value)

    def _summary(self) -> str:
        if self.session is None:
            return "load a model to start"
        if not self.history:
            return "add clicks on the object's boundary, then press Step"
        last = self.history[-1]
        score = "" if last.dice is None else f", Dice {last.dice:.3f}"
        return f"step {last.step}: {len(self.session.clicks)} clicks{score}"


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setMaximumHeight(170)
    return table


def _item(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
    return item


def _image_array(image: Image) -> np.ndarray:
    """The image layer's voxels as a 3D numpy array; ValueError naming an unusable layer."""
    if image.rgb:
        raise ValueError(f"the image layer '{image.name}' is RGB; MECCA segments 3D grey-value images")
    data = image.data[0] if image.multiscale else image.data
    if data.ndim != 3:
        raise ValueError(
            f"the image layer '{image.name}' is {data.ndim}D (shape {tuple(data.shape)}); MECCA "
            "segments 3D images: choose a 3D layer or split the stack (Layers > Split Stack)")
    array = np.asarray(data)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"the image layer '{image.name}' has non-numeric data ({array.dtype})")
    return array


def _image_key(image: Image) -> tuple:
    """What identifies the session's volume: the layer, its data and its transform."""
    return (image.unique_id, id(image.data), tuple(np.asarray(image.scale, float).tolist()),
            tuple(np.asarray(image.translate, float).tolist()))


def _real(obj: Any) -> Any:
    """The napari object behind the public-only proxy napari hands to plugin widgets (each
    access makes a new proxy, so identity is compared on the objects behind them)."""
    return getattr(obj, "__wrapped__", obj)


def _used_clicks(session: InteractiveSession) -> list[Click]:
    if session.volume is None:
        return []
    return [(*(int(v) for v in p), bool(f)) for p, f in zip(session.clicks, session.click_foreground)]


def _transform(image: Image | None) -> dict[str, Any]:
    """The keyword arguments that give a new layer the image layer's transform."""
    if image is None:
        return {}
    return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate,
            "shear": image.shear, "affine": image.affine.affine_matrix}

