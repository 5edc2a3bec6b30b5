"""The Renderer: one offscreen GL context drawing many frames of one mesh topology."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ..errors import InputError
from .backends import VertexNormals, create_backend
from .camera import Camera, resolve_camera

__all__ = ["Renderer", "check_faces", "check_sequence", "check_colors", "image_size"]

MAX_SIZE = 8192
SHADING = ("vertex", "pixel")


def image_size(size: Union[int, tuple[int, int]], even: bool = False) -> tuple[int, int]:
    """(width, height) from an int or a pair; ``even`` rounds odd sides up (H.264 with yuv420p)."""
    try:
        w, h = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError) as exc:
        raise InputError(f"image size {size!r} is not a number or a (width, height) pair",
                         "pass e.g. size=800 or size=(800, 600)") from exc
    if not (1 <= w <= MAX_SIZE and 1 <= h <= MAX_SIZE):
        raise InputError(f"image size {w}x{h} is outside 1..{MAX_SIZE} pixels", "pass e.g. size=800")
    if even:
        w, h = w + w % 2, h + h % 2
    return w, h


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a tensor on any device, in any dtype (numpy has no bfloat16)
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
    return np.asarray(x)


def check_faces(faces, n_vertices: Optional[int] = None) -> np.ndarray:
    """Validate triangle indices (F, 3) (a flat (3F,) array is reshaped); returns uint32."""
    if faces is None:
        raise InputError("no faces were given", "pass the (F, 3) triangles of the mesh, e.g. from its template .ply")
    f = _as_array(faces)
    if f.dtype.kind not in "iu" and not (f.dtype.kind == "f" and f.size and np.array_equal(f, np.round(f))):
        raise InputError(f"faces have dtype {f.dtype}; expected integer vertex indices", "pass an (F, 3) int array")
    if f.ndim == 1 and f.size % 3 == 0:
        f = f.reshape(-1, 3)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise InputError(f"faces have shape {tuple(f.shape)}; expected (F, 3) triangles with F > 0",
                         "pass triangle indices; quads must be split into triangles")
    if f.min() < 0:
        raise InputError(f"faces contain a negative vertex index ({int(f.min())})", "pass 0-based vertex indices")
    if n_vertices is not None and f.max() >= n_vertices:
        raise InputError(f"faces index vertex {int(f.max())} but the mesh has only {n_vertices} vertices",
                         "use the faces of the template these vertices were made for" + (
                             "; a 2-D (V, 3) array is read as V frames of one vertex: pass a lone frame as (1, V, 3)"
                             if n_vertices == 1 else ""))
    return np.ascontiguousarray(f, dtype=np.uint32)


def check_sequence(vertices, name: str = "vertex sequence") -> np.ndarray:
    """Validate a motion sequence: (T, V, 3), or (T, 3V) reshaped; returns float32 (T, V, 3)."""
    v = _as_array(vertices)
    if v.dtype.kind not in "iuf":
        raise InputError(f"{name} has dtype {v.dtype}; expected numbers", "pass a (T, V, 3) float array")
    if v.ndim == 2 and v.shape[1] % 3 == 0 and v.shape[1] > 0:
        v = v.reshape(len(v), -1, 3)
    if v.ndim != 3 or v.shape[2] != 3:
        raise InputError(f"{name} has shape {tuple(v.shape)}; expected (T, V, 3) or (T, 3V)",
                         "pass one row of vertex positions per frame")
    if v.shape[0] == 0:
        raise InputError(f"{name} is empty (0 frames)", "pass at least one frame")
    if v.shape[1] == 0:
        raise InputError(f"{name} has frames with 0 vertices", "pass a (T, V, 3) array with V > 0")
    finite = np.isfinite(v).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(f"{name} has non-finite values (NaN or inf) in {len(bad)} of {len(v)} frames "
                         f"(first: frame {int(bad[0])})", "check the model output or the file")
    return np.ascontiguousarray(v, dtype=np.float32)


def check_colors(colors, n_vertices: int, n_frames: Optional[int] = None, name: str = "colors") -> np.ndarray:
    """Validate per-vertex colours (V, 3) or (T, V, 3): floats in [0, 1] (clipped) or uint8."""
    c = _as_array(colors)
    if c.dtype.kind not in "iuf":
        raise InputError(f"{name} have dtype {c.dtype}; expected numbers", "pass RGB floats in [0, 1]")
    if c.dtype == np.uint8:
        c = c.astype(np.float32) / 255.0
    ok_shapes = [(n_vertices, 3)] + ([(n_frames, n_vertices, 3)] if n_frames is not None else [])
    if tuple(c.shape) not in ok_shapes and not (n_frames is not None and c.ndim == 3 and c.shape[1:] == (n_vertices, 3)
                                                and c.shape[0] >= n_frames):
        want = " or ".join(str(s) for s in ok_shapes)
        raise InputError(f"{name} have shape {tuple(c.shape)}; expected {want}", "pass one RGB colour per vertex")
    if not np.isfinite(c).all():
        raise InputError(f"{name} have non-finite values", "pass RGB floats in [0, 1]")
    return np.ascontiguousarray(np.clip(c, 0.0, 1.0), dtype=np.float32)


class Renderer:
    """Offscreen mesh renderer: one GL context reused for every frame.

    Args:
        faces: (F, 3) triangle indices of the mesh topology.
        size: image size, an int (square) or (width, height).
        camera: a preset name ("flame", "biwi", "fit"; see :data:`CAMERA_PRESETS`) or a
            :class:`Camera`. "fit" frames ``bounds_vertices``, or else the first frame rendered,
            and then stays fixed.
        background: RGB floats in [0, 1].
        backend: "auto", "moderngl", "egl", "osmesa" or "pyrender" (see :func:`create_backend`).
        bounds_vertices: (V, 3) vertices (e.g. the template) to fit the "fit" camera to.
        samples: multisample anti-aliasing samples (0: off; 4 smooths edges at about half the speed on CPU).
        shading: "vertex" (lighting per vertex, interpolated; fastest) or "pixel" (per-pixel lighting).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, faces, *, size: Union[int, tuple[int, int]] = (800, 800),
                 camera: Union[str, Camera, None] = "fit", background=(1.0, 1.0, 1.0), backend: str = "auto",
                 bounds_vertices=None, samples: int = 0, shading: str = "vertex"):
        self.width, self.height = image_size(size)
        bg = np.asarray(background, dtype=np.float64)
        if bg.shape != (3,) or not np.isfinite(bg).all():
            raise InputError(f"background {background!r} is not an RGB triple", "pass e.g. background=(1, 1, 1)")
        self.background = tuple(float(x) for x in np.clip(bg, 0.0, 1.0))
        bounds = None
        if bounds_vertices is not None:
            bounds = check_sequence(_as_array(bounds_vertices).reshape(1, -1, 3), "bounds_vertices")[0]
        self.faces = check_faces(faces, None if bounds is None else len(bounds))
        self._min_vertices = int(self.faces.max()) + 1
        self._camera_spec = camera
        self.camera: Optional[Camera] = None
        aspect = self.width / self.height
        if not (camera is None or (isinstance(camera, str) and camera.lower() in ("fit", "auto"))) or bounds is not None:
            self.camera = resolve_camera(camera, bounds, aspect)
        n_vertices = len(bounds) if bounds is not None else self._min_vertices
        self._normals: dict[int, VertexNormals] = {}
        self._normal_buffer = np.empty((n_vertices, 3), dtype=np.float32)
        if shading not in SHADING:
            raise InputError(f"unknown shading '{shading}'", f"choose one of: {', '.join(SHADING)}")
        self.backend = create_backend(backend, self.faces, n_vertices, (self.width, self.height), self.background,
                                      samples, shading)

    @property
    def backend_name(self) -> str:
        """Name of the backend in use (e.g. "moderngl-egl")."""
        return self.backend.name

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the images :meth:`render` returns: (height, width, 3)."""
        return (self.height, self.width, 3)

    def render(self, vertices, colors=None) -> np.ndarray:
        """Render one frame; returns a new (H, W, 3) uint8 image (rows top to bottom).

        Args:
            vertices: (V, 3) positions (a flat (3V,) array is reshaped).
            colors: optional (V, 3) per-vertex RGB floats in [0, 1] (or uint8).
        """
        out = np.empty(self.shape, dtype=np.uint8)
        return self.render_into(vertices, out, colors)

    def render_into(self, vertices, out: np.ndarray, colors=None) -> np.ndarray:
        """Render one frame into ``out``, a C-contiguous (H, W, 3) uint8 array; returns ``out``."""
        if self.backend is None:
            raise InputError("this Renderer is closed", "create a new Renderer")
        if out.shape != self.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise InputError(f"output buffer has shape {out.shape} and dtype {out.dtype}; expected a contiguous "
                             f"{self.shape} uint8 array", "allocate it with np.empty(renderer.shape, np.uint8)")
        v = _as_array(vertices)
        if v.ndim == 1:
            v = v.reshape(-1, 3) if v.size % 3 == 0 else v
        v = check_sequence(v[None], "vertices")[0]
        if len(v) < self._min_vertices:
            raise InputError(f"faces index vertex {self._min_vertices - 1} but the mesh has only {len(v)} vertices",
                             "use the faces of the template these vertices were made for")
        if colors is not None:
            colors = check_colors(colors, len(v))
        if self.camera is None:
            self.camera = resolve_camera(self._camera_spec, v, self.width / self.height)
        normals = self._normals.get(len(v))
        if normals is None:
            normals = self._normals[len(v)] = VertexNormals(self.faces, len(v))
        if len(self._normal_buffer) != len(v):
            self._normal_buffer = np.empty((len(v), 3), dtype=np.float32)
        normals(v, out=self._normal_buffer)
        self.backend.draw(v, self._normal_buffer, colors, self.camera, out)
        return out

    def close(self) -> None:
        """Free the GL context."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Renderer({self.width}x{self.height}, backend={getattr(self.backend, 'name', 'closed')!r}, "
                f"camera={self.camera!r})")
