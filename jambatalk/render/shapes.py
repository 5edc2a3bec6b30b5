"""A procedural stand-in mesh of any vertex count, for tests and benchmarks without real data."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["dome_mesh"]


def dome_mesh(n_vertices: int, radius: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A head-sized closed-front dome facing +z (y up) with exactly ``n_vertices`` vertices.

    The vertices form a latitude/longitude grid over the front of an ellipsoid (about two
    triangles per vertex, like FLAME's 5023 / 9976); the few left over after filling the grid
    are placed at the top and used by no face. Returns float32 vertices (V, 3) and int64 faces
    (F, 3), counter-clockwise seen from outside.
    """
    if n_vertices < 4:
        raise ValueError("dome_mesh needs at least 4 vertices")
    cols = math.ceil(math.sqrt(n_vertices))
    rows = n_vertices // cols
    lat = np.linspace(-1.3, 1.3, rows)[:, None]
    lon = np.linspace(-1.9, 1.9, cols)[None, :]
    x = 0.8 * radius * np.cos(lat) * np.sin(lon)
    y = 1.1 * radius * np.sin(lat) * np.ones_like(lon)
    z = radius * np.cos(lat) * np.cos(lon)
    grid = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    spare = np.repeat(grid[-1:], n_vertices - len(grid), axis=0)
    vertices = np.concatenate([grid, spare]).astype(np.float32)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return vertices, faces.astype(np.int64)
