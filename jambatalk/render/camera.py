"""Cameras: a small dataclass, named presets per mesh convention, and a fit-to-bounds camera.

Dataset specs name their camera by a preset string (``"flame"``, ``"biwi"``, ``"fit"``); the
table of presets lives here, as data. Matrices follow OpenGL conventions (right-handed eye
space looking down -z, clip space in [-1, 1]) and are returned as row-major float32 4x4 arrays.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ..errors import InputError

__all__ = ["Camera", "CAMERA_PRESETS", "camera_preset", "fit_camera", "resolve_camera", "look_at", "projection"]

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Camera:
    """A pinhole (``fov_deg``) or orthographic (``ortho_scale``) camera.

    Attributes:
        eye: camera position in mesh units.
        target: point looked at.
        up: approximate up direction (made orthogonal to the view direction).
        fov_deg: vertical field of view in degrees (perspective cameras).
        ortho_scale: half the visible height in mesh units; when set, the camera is orthographic.
        znear, zfar: clipping distances from the eye along the view direction.
    """

    eye: Vec3 = (0.0, 0.0, 1.0)
    target: Vec3 = (0.0, 0.0, 0.0)
    up: Vec3 = (0.0, 1.0, 0.0)
    fov_deg: float = 20.0
    ortho_scale: Optional[float] = None
    znear: float = 0.01
    zfar: float = 100.0

    def __post_init__(self):
        eye, target, up = (np.asarray(x, dtype=np.float64) for x in (self.eye, self.target, self.up))
        if any(x.shape != (3,) or not np.isfinite(x).all() for x in (eye, target, up)):
            raise InputError(f"camera eye/target/up must be three finite numbers each, got {self}",
                             "pass e.g. Camera(eye=(0, 0, 1), target=(0, 0, 0))")
        if np.linalg.norm(eye - target) == 0:
            raise InputError("camera eye and target are the same point", "move the eye away from the target")
        if np.linalg.norm(np.cross(eye - target, up)) <= 1e-9 * np.linalg.norm(eye - target) * np.linalg.norm(up):
            raise InputError("camera up direction is parallel to the view direction", "pick another up vector")
        if self.ortho_scale is None and not 0 < self.fov_deg < 180:
            raise InputError(f"camera field of view {self.fov_deg} deg is outside (0, 180)", "pass e.g. fov_deg=20")
        if self.ortho_scale is not None and not self.ortho_scale > 0:
            raise InputError(f"camera ortho_scale {self.ortho_scale} must be positive", "pass a half-height > 0")
        if not 0 < self.znear < self.zfar:
            raise InputError(f"camera clipping range znear={self.znear}, zfar={self.zfar} is invalid",
                             "pass 0 < znear < zfar")

    @property
    def orthographic(self) -> bool:
        return self.ortho_scale is not None

    def view_matrix(self) -> np.ndarray:
        """World -> eye transform (4x4, row-major)."""
        return look_at(self.eye, self.target, self.up)

    def projection_matrix(self, aspect: float) -> np.ndarray:
        """Eye -> clip transform for an image of width/height ``aspect`` (4x4, row-major)."""
        return projection(self, aspect)

    def replace(self, **changes) -> Camera:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def look_at(eye, target, up) -> np.ndarray:
    """The OpenGL-style view matrix of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(x, dtype=np.float64) for x in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    side = np.cross(forward, up)
    side /= np.linalg.norm(side)
    true_up = np.cross(side, forward)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = side, true_up, -forward
    m[:3, 3] = -m[:3, :3] @ eye
    return m.astype(np.float32)


def projection(camera: Camera, aspect: float) -> np.ndarray:
    """Perspective or orthographic projection matrix of ``camera`` (4x4, row-major)."""
    n, f = float(camera.znear), float(camera.zfar)
    m = np.zeros((4, 4))
    if camera.ortho_scale is not None:
        top = float(camera.ortho_scale)
        right = top * aspect
        m[0, 0], m[1, 1] = 1.0 / right, 1.0 / top
        m[2, 2], m[2, 3], m[3, 3] = -2.0 / (f - n), -(f + n) / (f - n), 1.0
    else:
        t = 1.0 / math.tan(math.radians(camera.fov_deg) / 2.0)
        m[0, 0], m[1, 1] = t / aspect, t
        m[2, 2], m[2, 3], m[3, 2] = (f + n) / (n - f), 2.0 * f * n / (n - f), -1.0
    return m.astype(np.float32)


#: Named cameras. Meshes follow FLAME's convention (y up, the face looking along +z).
#: "flame": VOCASET / FLAME meshes in metres, a frontal view framing a ~0.2 m head.
#: "biwi": BIWI meshes normalised as in the public pipelines (centred, unit surface area, so a
#: head spans about one unit), a frontal view.
#: "fit": no fixed pose; fitted to the bounds of the first frame (or given template).
CAMERA_PRESETS: dict[str, Optional[Camera]] = {
    "flame": Camera(eye=(0.0, -0.025, 0.9), target=(0.0, -0.025, 0.0), fov_deg=20.0, znear=0.05, zfar=10.0),
    "biwi": Camera(eye=(0.0, 0.05, 3.4), target=(0.0, 0.05, 0.0), fov_deg=20.0, znear=0.1, zfar=30.0),
    "fit": None,
}

#: Alternative names accepted for the presets above.
CAMERA_ALIASES = {"vocaset": "flame", "voca": "flame", "auto": "fit"}


def camera_preset(name: str) -> Optional[Camera]:
    """The preset camera called ``name`` (None for "fit", which is computed from the mesh)."""
    key = CAMERA_ALIASES.get(name.lower(), name.lower())
    if key in CAMERA_PRESETS:
        return CAMERA_PRESETS[key]
    spec_camera = _camera_from_dataset_spec(name)
    if spec_camera is not None:
        return camera_preset(spec_camera)
    raise InputError(f"unknown camera preset '{name}'",
                     f"choose one of: {', '.join([*CAMERA_PRESETS, *CAMERA_ALIASES])} or a dataset's name "
                     "(in Python also a jambatalk.render.Camera)")


def _camera_from_dataset_spec(name: str) -> Optional[str]:
    """The camera preset named by the dataset spec ``name``, when the dataset registry knows it."""
    try:
        from .. import data

        spec = data.get_spec(name)
    except Exception:  # noqa: BLE001 - no registry or no such spec: not a spec name
        return None
    camera = getattr(spec, "camera", None)
    key = CAMERA_ALIASES.get(str(camera).lower(), str(camera).lower()) if camera else None
    return key if key in CAMERA_PRESETS else None


def fit_camera(vertices, aspect: float = 1.0, *, fov_deg: float = 20.0, margin: float = 1.15,
               direction: Vec3 = (0.0, 0.0, 1.0), up: Vec3 = (0.0, 1.0, 0.0)) -> Camera:
    """A perspective camera looking at ``vertices`` (V, 3) from ``direction`` that frames them.

    The mesh's bounding box, seen from along ``direction`` (default: from the front, +z), fits
    the image with ``margin`` to spare.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if v.size == 0 or not np.isfinite(v).all():
        raise InputError("cannot fit a camera to an empty or non-finite mesh", "pass finite (V, 3) vertices")
    lo, hi = v.min(axis=0), v.max(axis=0)
    if np.array_equal(lo, hi):  # no extent to frame: the clipping range would be empty
        raise InputError(f"cannot fit a camera to the mesh: all its {len(v)} vertices are at one point "
                         f"({', '.join(f'{x:g}' for x in lo)})", "check the vertices: they do not span a face (an "
                         "all-zero array holds none)")
    center = (lo + hi) / 2.0
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    side = np.cross(up, d)
    side /= np.linalg.norm(side)
    true_up = np.cross(d, side)
    rel = v - center
    half_w = max(np.abs(rel @ side).max(), 1e-6)
    half_h = max(np.abs(rel @ true_up).max(), 1e-6)
    depth = rel @ d
    tan_half = math.tan(math.radians(fov_deg) / 2.0)
    distance = max(half_h, half_w / aspect) * margin / tan_half + depth.max()
    radius = float(np.linalg.norm(rel, axis=1).max())
    eye = center + d * distance
    return Camera(eye=tuple(eye.tolist()), target=tuple(center.tolist()), up=tuple(true_up.tolist()),
                  fov_deg=fov_deg, znear=max(distance - 2.0 * radius, distance * 1e-3), zfar=distance + 2.0 * radius)


def resolve_camera(camera: Union[str, Camera, None], bounds_vertices=None, aspect: float = 1.0) -> Camera:
    """Turn a preset name, ``"fit"`` or a :class:`Camera` into a :class:`Camera`.

    ``"fit"`` (and ``"auto"``/None) needs ``bounds_vertices`` (V, 3): the template or first frame.
    """
    if isinstance(camera, Camera):
        return camera
    if camera is None:
        camera = "fit"
    if not isinstance(camera, str):
        raise InputError(f"camera must be a preset name or a Camera, got {type(camera).__name__}",
                         f"pass one of: {', '.join(CAMERA_PRESETS)}")
    preset = camera_preset(camera)
    if preset is not None:
        return preset
    if bounds_vertices is None:
        raise InputError("the 'fit' camera needs vertices to fit", "pass bounds_vertices=(V, 3) template")
    return fit_camera(bounds_vertices, aspect)
