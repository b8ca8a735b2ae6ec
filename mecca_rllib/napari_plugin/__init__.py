"""napari plugin: MECCA click by click inside the viewer (``pip install -e '.[napari]'``).

The manifest ``napari.yaml`` (npe2) contributes one dock widget, "MECCA"
(:class:`~mecca_rllib.napari_plugin._widget.MeccaWidget`). Nothing here imports napari or
Qt at package import, so ``import mecca_rllib`` works without the extra.
"""
