"""Make ``docs/napari.png``: the MECCA dock widget in a headless napari viewer after a step.

``python -m mecca_rllib.napari_plugin.screenshot --out docs/napari.png [--checkpoint CKPT]``

A phantom scan (anisotropic voxels, so the image layer has a non-unit scale) and its label
(the reference for the Dice table) are opened in napari; the widget from the plugin's
manifest loads the model, six clicks go on the object's boundary in the middle slice, and
two steps run. Without ``--checkpoint`` a seeded *untrained* tiny module is used (like the
browser UI's screenshot): the picture shows the widget and the layers, not a good
segmentation.

Without a display a private Xvfb is started (:mod:`.headless`); the window is drawn on
Qt's ``xcb`` platform, which needs ``apt-get install xvfb libxcb-cursor0 libxcb-icccm4
libxcb-keysyms1`` (``--platform offscreen`` works without the xcb libraries but leaves
the canvas out of the window grab).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (24, 64, 64)  #: phantom (D, H, W)
SCALE = (2.5, 1.0, 1.0)  #: mm per voxel
NETWORK_SHAPE = (16, 32, 32)  #: the untrained module's training shape


def _boundary_clicks(label: np.ndarray, n: int = 6) -> tuple[int, np.ndarray]:
    """The slice with the largest object area and ``n`` voxels on its boundary, spread by angle."""
    from scipy.ndimage import binary_erosion

    z = int(np.argmax(label.reshape(label.shape[0], -1).sum(1)))
    mask = label[z] > 0
    edge = np.argwhere(mask & ~binary_erosion(mask))
    centre = edge.mean(0)
    angle = np.arctan2(*(edge - centre).T)
    picks = edge[np.argsort(angle)][np.linspace(0, len(edge) - 1, n, endpoint=False).astype(int)]
    return z, np.column_stack([np.full(n, z), picks]).astype(float)


def _untrained_checkpoint(folder: Path) -> Path:
    import torch

    from mecca_rllib.policies.checkpoints import build_module, save_module

    torch.manual_seed(0)
    module = build_module({"shape": NETWORK_SHAPE, "width": 4})
    return save_module(module, folder / "untrained-tiny-module")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/napari.png"))
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint or exported model (default: an untrained tiny module)")
    parser.add_argument("--platform", default="xcb", help="Qt platform (default: xcb)")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 900), metavar=("W", "H"))
    args = parser.parse_args(argv)

    from mecca_rllib.napari_plugin.headless import ensure_display

    if ensure_display() is None:
        parser.error("no DISPLAY and no Xvfb: apt-get install xvfb")
    os.environ.setdefault("QT_QPA_PLATFORM", args.platform)

    import napari
    from qtpy.QtWidgets import QApplication

    from mecca_rllib.data.phantoms import make_phantom

    with tempfile.TemporaryDirectory(prefix="mecca-napari-") as tmp:
        checkpoint = args.checkpoint or _untrained_checkpoint(Path(tmp))
        image, label = make_phantom(SHAPE, rng=7)
        viewer = napari.Viewer(title="MECCA in napari", show=True)
        viewer.window.resize(*args.size)
        scan = viewer.add_image(image, name="scan", scale=SCALE, colormap="gray")
        viewer.add_labels(label, name="reference", scale=SCALE, opacity=0.0, visible=False)
        _, widget = viewer.window.add_plugin_dock_widget("mecca-rllib", "MECCA")
        viewer.layers.selection.active = scan

        def wait() -> None:
            deadline = time.monotonic() + 300
            while widget.busy and time.monotonic() < deadline:
                QApplication.processEvents()
                time.sleep(0.02)

        widget.path_edit.setText(str(checkpoint))
        widget.load_model(checkpoint)
        wait()
        if widget.session is None:
            print(f"could not load {checkpoint}", file=sys.stderr)
            return 1
        widget.add_click_layers()
        clicks = widget.points_choice.layer(viewer.layers)
        z, points = _boundary_clicks(label)
        clicks.add(points)
        widget.reference_choice.setCurrentText("reference")
        widget.step()
        wait()
        clicks.add(points[:2] + [0, 2, 2])
        widget.step()
        wait()
        if not widget.history:
            print("the step failed; see the notification above", file=sys.stderr)
            return 1
        viewer.reset_view()
        viewer.dims.set_point(0, z * SCALE[0])  # the clicks' slice
        viewer.layers.selection.active = widget.output_layer("segmentation")
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_png = args.out.with_name(f".{args.out.name}.tmp.png")
        viewer.screenshot(str(tmp_png), canvas_only=False)
        os.replace(tmp_png, args.out)  # atomic, as everywhere in the project
        print(f"wrote {args.out} (step {widget.history[-1].step}, "
              f"{len(widget.session.clicks)} clicks)")
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
