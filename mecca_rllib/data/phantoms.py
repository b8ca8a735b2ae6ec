"""Synthetic tumour-like phantoms that a global threshold cannot segment.

A phantom imitates one preprocessed case (MECCA.md §6): the target fills most of the box,
as after cropping to the label's bounding box plus a margin. Geometry is drawn in
box-normalised coordinates (every axis spans [-1, 1]), so any shape works, down to
(8, 16, 16). Ingredients, each one a reason a threshold fails:

* irregular boundary: a blob whose radius is modulated by random low-order angular terms
  and displaced by smoothed 3D noise (lobes, not an ellipsoid);
* heterogeneous interior: textured intensity and, in some cases, a darker necrotic core;
* soft partial-volume edges (label = the voxels more than half inside);
* a bright-ish oedema halo around the target and distractor blobs of tumour-like intensity
  touching or near the target;
* a multiplicative smooth bias field and Gaussian noise.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from scipy import interpolate, ndimage
from scipy.special import expit

Shape3 = tuple[int, int, int]


def _smooth_noise(rng: np.random.Generator, shape: Shape3, cells: int = 4) -> np.ndarray:
    """Smooth unit-scale random field ``(D, H, W)`` float32: separable cubic-spline
    upsampling of a coarse ``(cells+1)^3`` normal grid (feature size ~ box / cells,
    whatever the shape)."""
    d, h, w = shape
    coarse = rng.standard_normal((cells + 1,) * 3).astype(np.float32)
    # einsum without BLAS: these products are tiny, and threaded BLAS spins on busy CPUs.
    field = np.einsum("ijk,xk->ijx", coarse, _spline_weights(cells, w))      # (c, c, W)
    field = np.einsum("ijx,yj->iyx", field, _spline_weights(cells, h))       # (c, H, W)
    field = np.einsum("iyx,zi->zyx", field, _spline_weights(cells, d))       # (D, H, W)
    return field / max(float(field.std()), 1e-6)


@functools.lru_cache(maxsize=64)
def _spline_weights(cells: int, n: int) -> np.ndarray:
    """Weights ``(n, cells+1)`` interpolating ``cells+1`` knots at ``n`` even positions."""
    spline = interpolate.CubicSpline(np.arange(cells + 1), np.eye(cells + 1), axis=0)
    return spline(np.linspace(0.0, cells, n)).astype(np.float32)


def _blob_distance(axes: list[np.ndarray], centre: np.ndarray, radii: np.ndarray,
                   lobes: np.ndarray | None = None) -> np.ndarray:
    """Normalised signed "distance" ``(D, H, W)`` of an (optionally lobed) ellipsoid:
    < 0 inside, 0 on the surface, about (r / R - 1) outside. ``axes`` are the three
    broadcastable open-grid coordinate arrays (``np.ogrid`` style)."""
    z, y, x = ((a - c) / r for a, c, r in zip(axes, centre, radii))
    r = np.sqrt(z * z + y * y + x * x) + 1e-6
    if lobes is None:
        return r - 1.0
    z, y, x = z / r, y / r, x / r
    # Real angular terms up to degree 3 (spherical-harmonic-like radial modulation).
    l = lobes
    modulation = (l[0] * z + l[1] * y + l[2] * x + l[3] * z * y + l[4] * z * x + l[5] * y * x
                  + l[6] * (z * z - y * y) + l[7] * (y * y - x * x) + l[8] * z * y * x
                  + z * (l[9] * (z * z - y * y)) + x * (l[10] * (x * x - y * y)))
    return r / (1.0 + np.clip(modulation, -0.4, 0.4)) - 1.0


def make_phantom(shape: Shape3 = (30, 55, 55), rng: np.random.Generator | int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        shape: ``(D, H, W)``, each at least 4.
        rng: a generator, or an int seed; the same seed gives the same case.

    Returns:
        ``(image, label)``: float32 ``(D, H, W)`` z-scored over the volume, and uint8
        ``(D, H, W)`` in {0, 1} with a single non-empty connected target.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape: need three sizes >= 4, got {shape}")
    rng = np.random.default_rng(rng)
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape([-1 if i == k else 1 for k in range(3)])
            for i, n in enumerate(shape)]                      # open grid, box-normalised
    voxel = 2.0 / (np.asarray(shape, np.float32) - 1.0)  # voxel size in normalised units

    # Target: lobed blob displaced by smooth noise; label = more than half inside.
    centre = rng.uniform(-0.1, 0.1, 3).astype(np.float32)
    radii = rng.uniform(0.5, 0.7, 3).astype(np.float32)
    lobes = rng.normal(0.0, 0.25, 11).astype(np.float32)
    dist = _blob_distance(axes, centre, radii, lobes) + 0.22 * _smooth_noise(rng, shape, 4)
    edge = float(voxel.mean()) / float(radii.mean())          # ~one voxel of partial volume
    inside = expit(-dist / (0.5 * edge))
    label_mask = dist < 0
    components, count = ndimage.label(label_mask)
    if count > 1:
        sizes = np.bincount(components.ravel())[1:]
        label_mask = components == 1 + int(np.argmax(sizes))
    if not label_mask.any():  # a degenerate draw at a tiny shape: keep the deepest voxel
        label_mask = dist <= dist.min()
    inside = np.where(label_mask, np.maximum(inside, 0.5), np.minimum(inside, 0.5))

    # Intensities before bias and noise (background tissue ~ 1).
    tumour_mean = rng.uniform(1.6, 2.0)
    image = 1.0 + 0.12 * _smooth_noise(rng, shape, 6)
    oedema = expit((rng.uniform(0.15, 0.35) - dist) / (2 * edge))
    image = image + (rng.uniform(0.35, 0.55) * (tumour_mean - 1.0)) * oedema
    for _ in range(int(rng.integers(2, 5))):          # distractors near the target surface
        direction = rng.normal(size=3).astype(np.float32)
        direction /= np.linalg.norm(direction)
        d_centre = centre + direction * radii * rng.uniform(0.9, 1.25)
        d_radii = radii * rng.uniform(0.22, 0.45, 3).astype(np.float32)
        d_dist = _blob_distance(axes, d_centre, d_radii)
        d_soft = expit(-d_dist / edge) * (1.0 - inside)
        image = image * (1.0 - d_soft) + tumour_mean * rng.uniform(0.85, 1.1) * d_soft
    texture = 1.0 + 0.15 * _smooth_noise(rng, shape, 5)
    tumour = tumour_mean * texture
    if rng.random() < 0.6:                             # darker necrotic core
        core = expit(-(dist + rng.uniform(0.35, 0.6)) / edge)
        tumour = tumour * (1.0 - core) + rng.uniform(1.0, 1.3) * core
    image = image * (1.0 - inside) + tumour * inside

    # Multiplicative smooth bias field and additive noise.
    slope = rng.normal(0.0, 0.12, 3).astype(np.float32)
    bias = np.exp(sum(k * a for k, a in zip(slope, axes)) + 0.1 * _smooth_noise(rng, shape, 2))
    image = image * bias + rng.normal(0.0, 0.1, shape).astype(np.float32)
    image = (image - image.mean()) / max(float(image.std()), 1e-6)
    return image.astype(np.float32), label_mask.astype(np.uint8)


def write_phantom_folder(out: str | os.PathLike, n: int, shape: Shape3 = (30, 55, 55), *,
                         seed: int = 0, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
                         ) -> Path:
    """Write ``n`` phantoms as an ``images/`` + ``labels/`` NIfTI folder (RAS, ``spacing``
    ``(d, h, w)`` mm); case ``i`` is ``make_phantom(shape, default_rng([seed, i]))``. The
    folder appears atomically; ``out`` must not exist or be empty."""
    import nibabel as nib

    from mecca_rllib.data.atomic import atomic_folder
    from mecca_rllib.data.nifti import dhw_to_nifti

    if n < 1:
        raise ValueError(f"n: need at least 1, got {n}")

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i in range(n):
            image, label = make_phantom(shape, np.random.default_rng([seed, i]))
            nib.save(dhw_to_nifti(image, spacing), tmp / "images" / f"phantom_{i:04d}.nii.gz")
            nib.save(dhw_to_nifti(label, spacing), tmp / "labels" / f"phantom_{i:04d}.nii.gz")

    return atomic_folder(out, fill)
