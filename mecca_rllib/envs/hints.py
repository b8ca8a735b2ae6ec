"""Incremental Gaussian hint maps (MECCA.md §1: one channel, a 3D Gaussian per click, max).

Each click contributes ``exp(-|x - c|^2 / (2 sigma^2))`` (exactly 1.0 at the clicked voxel
``c``) inside a cubic window of ``kernel + 1`` voxels centred on it (``kernel // 2`` voxels
each side, so an 8-voxel kernel spans 9 voxels and is symmetric). The default
``sigma = kernel / 4`` (2 voxels for the paper's kernel of 8) puts the window edge at two
standard deviations (value ``exp(-2) ~ 0.14`` along an axis). Clicks combine by maximum, and
adding clicks only touches their windows, never the whole volume.

:class:`ClickHints` holds the hint channels of an observation: the paper's one map of all
clicks, or (``channels=2``, MECCA.md §1's option) one map of foreground clicks and one of
background clicks, so that the policy can tell "this should be object" from "this should not".
"""
from __future__ import annotations

import numpy as np

from mecca_rllib.envs.simulated_user import validate_points

__all__ = ["HINT_CHANNELS", "gaussian_kernel", "ClickHints", "HintMap"]

#: Allowed numbers of hint channels: 1 (all clicks, the paper) or 2 (foreground, background).
HINT_CHANNELS = (1, 2)


def gaussian_kernel(kernel: int, sigma: float | None = None) -> np.ndarray:
    """Isotropic 3D Gaussian of shape ``(2r+1,)*3`` with ``r = kernel // 2``, peak 1.0.

    ``sigma`` in voxels; ``None`` -> ``kernel / 4``.
    """
    if int(kernel) != kernel or kernel < 1:
        raise ValueError(f"hint kernel must be a positive integer number of voxels, got {kernel!r}")
    sigma = kernel / 4.0 if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"hint sigma must be positive, got {sigma}")
    r = int(kernel) // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2))  # separable: exp(-|d|^2/2s^2) = prod exp(-d_k^2/2s^2)
    return (g[:, None, None] * g[None, :, None] * g[None, None, :]).astype(np.float32)


class HintMap:
    """One-channel hint map of shape ``(D, H, W)``, float32 in [0, 1].

    ``out`` may be a preallocated float32 array of that shape (e.g. the hint channel of an
    observation buffer); the map then writes into it in place.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        kernel: int = 8,
        sigma: float | None = None,
        out: np.ndarray | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.kernel = gaussian_kernel(kernel, sigma)
        self.radius = self.kernel.shape[0] // 2
        if out is None:
            out = np.zeros(self.shape, np.float32)
        elif out.shape != self.shape or out.dtype != np.float32:
            raise ValueError(
                f"hint buffer must be float32 {self.shape}, got {out.dtype} {out.shape}"
            )
        self.values = out
        self.values.fill(0.0)

    def reset(self) -> None:
        """Remove all clicks (zero the map)."""
        self.values.fill(0.0)

    def add(self, points: np.ndarray) -> None:
        """Add clicks: ``points`` is an int array ``(K, 3)`` of ``(d, h, w)`` voxel indices.

        Only the ``(kernel + 1)^3`` window around each new click is read and written.
        """
        points = validate_points(points, self.shape)
        r, size = self.radius, self.kernel.shape[0]
        for c in points:  # one iteration per click (a handful), each a small window max
            lo = c - r  # window start per axis; may stick out of the volume on either side
            src = tuple(
                slice(max(0, -a), size - max(0, a + size - n)) for a, n in zip(lo, self.shape)
            )
            dst = tuple(slice(max(0, a), min(n, a + size)) for a, n in zip(lo, self.shape))
            window = self.values[dst]
            np.maximum(window, self.kernel[src], out=window)


class ClickHints:
    """The hint channels of an observation, float32 ``(C, D, H, W)`` in [0, 1].

    ``channels=1``: one map of every click (MECCA.md §1). ``channels=2``: channel 0 maps
    foreground clicks (the clicked voxel belongs to the object), channel 1 background clicks.
    ``out`` may be a preallocated float32 ``(C, D, H, W)`` array (e.g. the hint channels of an
    observation buffer), written in place.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        kernel: int = 8,
        channels: int = 1,
        sigma: float | None = None,
        out: np.ndarray | None = None,
    ) -> None:
        if channels not in HINT_CHANNELS:
            raise ValueError(f"hint_channels must be one of {HINT_CHANNELS}, got {channels!r}")
        self.channels = int(channels)
        if out is None:
            out = np.zeros((self.channels, *shape), np.float32)
        elif out.shape[:1] != (self.channels,):
            raise ValueError(f"hint buffer must have {self.channels} channel(s), got shape {out.shape}")
        self.values = out
        self.maps = [HintMap(shape, kernel, sigma, out=out[i]) for i in range(self.channels)]

    def reset(self) -> None:
        """Remove all clicks (zero every channel)."""
        for m in self.maps:
            m.reset()

    def sides(self, foreground: np.ndarray | bool | None, count: int) -> np.ndarray:
        """bool ``(count,)``: the side each of ``count`` clicks marks, from one bool or one per
        click (``None``: foreground, allowed with one channel only). ``ValueError`` otherwise."""
        if foreground is None and self.channels == 2:
            raise ValueError(
                "this model was trained with separate foreground/background hints "
                "(hint_channels=2): pass foreground=True or False for the clicks"
            )
        fg = np.asarray(True if foreground is None else foreground, bool)
        if fg.ndim > 1 or fg.size not in (1, count):
            raise ValueError(f"foreground must be one bool or one per click ({count}), "
                             f"got shape {tuple(fg.shape)}")
        return np.broadcast_to(fg.reshape(-1), (count,))

    def add(self, points: np.ndarray, foreground: np.ndarray | bool | None = None) -> None:
        """Add clicks ``(K, 3)`` ``(d, h, w)``; ``foreground`` (bool or bool ``(K,)``) says which
        side each click marks. Required with two channels; ignored with one."""
        if self.channels == 1:
            self.maps[0].add(points)
            return
        if foreground is None:
            raise ValueError(
                "this model uses separate foreground/background hint channels: "
                "say for every click whether it marks foreground"
            )
        points = np.asarray(points).reshape(-1, 3)
        fg = np.broadcast_to(np.asarray(foreground, dtype=bool), (len(points),))
        self.maps[0].add(points[fg])
        self.maps[1].add(points[~fg])
