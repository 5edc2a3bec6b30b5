"""Offscreen OpenGL backends: moderngl on EGL, moderngl on OSMesa, and pyrender (optional).

A backend owns one GL context for its whole life and draws one frame per call into a caller's
preallocated (H, W, 3) uint8 buffer. Per frame only positions + normals (and colours, when
given) are uploaded; the index buffer, shaders and framebuffers are made once.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from ctypes.util import find_library
from typing import Optional

import numpy as np

from ..errors import InputError, MissingDependencyError
from .camera import Camera

__all__ = ["BACKENDS", "Backend", "backend_names", "ModernGLBackend", "PyrenderBackend", "create_backend", "available_backends",
           "VertexNormals"]

#: Backend names in the order "auto" tries them.
BACKENDS = ("moderngl-egl", "moderngl-osmesa", "pyrender")
_ALIASES = {
    "auto": BACKENDS,
    "moderngl": ("moderngl-egl", "moderngl-osmesa"),
    "egl": ("moderngl-egl",),
    "osmesa": ("moderngl-osmesa",),
}

#: Base colour of the mesh when no per-vertex colours are given (a light grey).
BASE_COLOR = (0.78, 0.78, 0.80)

#: Directional lights in eye space: (direction towards the light, diffuse weight). A key light
#: from the upper left, a fill light from the right, and a weak light from below.
LIGHTS = (
    ((-0.45, 0.55, 0.70), 0.62),
    ((0.60, 0.10, 0.80), 0.30),
    ((0.00, -0.60, 0.80), 0.12),
)
AMBIENT = 0.22
SPECULAR = 0.10


class VertexNormals:
    """Smooth (area-weighted) vertex normals of one mesh topology, vectorised with a sparse sum."""

    def __init__(self, faces: np.ndarray, n_vertices: int):
        from scipy import sparse

        faces = np.asarray(faces, dtype=np.int64)
        self.i0, self.i1, self.i2 = (np.ascontiguousarray(faces[:, k]) for k in range(3))
        cols = np.repeat(np.arange(len(faces)), 3)
        data = np.ones(faces.size, dtype=np.float32)
        self.incidence = sparse.csr_matrix((data, (faces.reshape(-1), cols)), shape=(n_vertices, len(faces)))

    def __call__(self, vertices: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Unit normals (V, 3) of ``vertices`` (V, 3); written into ``out`` when given."""
        v0 = vertices[self.i0]
        face_normals = np.cross(vertices[self.i1] - v0, vertices[self.i2] - v0)
        normals = self.incidence @ face_normals
        length = np.sqrt(np.einsum("ij,ij->i", normals, normals))[:, None]
        np.maximum(length, 1e-20, out=length)
        if out is None:
            return (normals / length).astype(np.float32)
        np.divide(normals, length, out=out)
        return out


class Backend:
    """Interface of a renderer backend (one GL context, reused for every frame)."""

    name = "base"

    def draw(self, positions: np.ndarray, normals: np.ndarray, colors: Optional[np.ndarray],
             camera: Camera, out: np.ndarray) -> None:
        """Render one frame into ``out`` (H, W, 3) uint8, rows top to bottom."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the GL context and its buffers."""


# --------------------------------------------------------------------------------------------- moderngl

# The light rig as GLSL, shared by per-vertex (Gouraud) and per-pixel (Phong) shading. The viewer
# is taken at infinity (direction +z in eye space), so light and half vectors are uniforms.
_LIGHTING = """
uniform vec3 u_base;
uniform float u_use_color;
uniform vec3 u_light_dir[3];
uniform vec3 u_light_half[3];
uniform float u_light_w[3];
uniform float u_ambient;
uniform float u_specular;
vec3 shade(vec3 n, vec3 color) {
    n = normalize(n);
    if (n.z < 0.0) n = -n;  // two-sided: inner surfaces (mouth, eyelids) are lit too
    vec3 albedo = mix(u_base, color, u_use_color);
    float diffuse = u_ambient;
    float spec = 0.0;
    for (int i = 0; i < 3; ++i) {
        diffuse += u_light_w[i] * max(dot(n, u_light_dir[i]), 0.0);
        float h = max(dot(n, u_light_half[i]), 0.0);
        h *= h; h *= h; h *= h; h *= h; h *= h;  // h^32
        spec += u_light_w[i] * h;
    }
    return clamp(diffuse * albedo + u_specular * spec, 0.0, 1.0);
}
"""

_SHADERS = {
    # lighting evaluated per vertex and interpolated: fastest on software GL, smooth on dense meshes
    "vertex": ("""
#version 330
uniform mat4 u_mvp;
uniform mat3 u_normal_matrix;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_rgb;
""" + _LIGHTING + """
void main() {
    v_rgb = shade(u_normal_matrix * in_normal, in_color);
    gl_Position = u_mvp * vec4(in_pos, 1.0);
}
""", """
#version 330
in vec3 v_rgb;
out vec4 f_color;
void main() {
    f_color = vec4(v_rgb, 1.0);
}
"""),
    # lighting evaluated per pixel from interpolated normals
    "pixel": ("""
#version 330
uniform mat4 u_mvp;
uniform mat3 u_normal_matrix;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal;
out vec3 v_color;
void main() {
    v_normal = u_normal_matrix * in_normal;
    v_color = in_color;
    gl_Position = u_mvp * vec4(in_pos, 1.0);
}
""", """
#version 330
in vec3 v_normal;
in vec3 v_color;
out vec4 f_color;
""" + _LIGHTING + """
void main() {
    f_color = vec4(shade(v_normal, v_color), 1.0);
}
"""),
}

# OSMesa constants (GL/osmesa.h)
_OSMESA_FORMAT, _OSMESA_RGBA, _GL_UNSIGNED_BYTE = 0x22, 0x1908, 0x1401
_OSMESA_DEPTH_BITS, _OSMESA_STENCIL_BITS, _OSMESA_ACCUM_BITS = 0x30, 0x31, 0x32
_OSMESA_PROFILE, _OSMESA_CORE_PROFILE = 0x33, 0x34
_OSMESA_MAJOR, _OSMESA_MINOR = 0x36, 0x37


def _find_osmesa() -> Optional[str]:
    """Path or soname of libOSMesa ($JAMBATALK_OSMESA_LIBRARY overrides the search)."""
    return os.environ.get("JAMBATALK_OSMESA_LIBRARY") or find_library("OSMesa")


class _OSMesaLoader:
    """A moderngl context loader over OSMesa (Mesa's software offscreen GL), through ctypes."""

    def __init__(self):
        path = _find_osmesa()
        if not path:
            raise OSError("libOSMesa was not found")
        lib = ctypes.CDLL(path)
        lib.OSMesaCreateContextAttribs.restype = ctypes.c_void_p
        lib.OSMesaCreateContextAttribs.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]
        lib.OSMesaMakeCurrent.restype = ctypes.c_ubyte
        lib.OSMesaMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_int]
        lib.OSMesaGetProcAddress.restype = ctypes.c_void_p
        lib.OSMesaGetProcAddress.argtypes = [ctypes.c_char_p]
        lib.OSMesaDestroyContext.argtypes = [ctypes.c_void_p]
        attrs = [_OSMESA_FORMAT, _OSMESA_RGBA, _OSMESA_DEPTH_BITS, 24, _OSMESA_STENCIL_BITS, 0, _OSMESA_ACCUM_BITS, 0,
                 _OSMESA_PROFILE, _OSMESA_CORE_PROFILE, _OSMESA_MAJOR, 3, _OSMESA_MINOR, 3, 0]
        ctx = lib.OSMesaCreateContextAttribs((ctypes.c_int * len(attrs))(*attrs), None)
        if not ctx:
            raise RuntimeError(f"OSMesaCreateContextAttribs failed for an OpenGL 3.3 core context ({path})")
        self._lib, self._ctx = lib, ctx
        self._surface = (ctypes.c_ubyte * 16)()  # we draw into our own framebuffer; a 2x2 surface suffices
        self.__enter__()

    def load_opengl_function(self, name: str) -> int:
        return self._lib.OSMesaGetProcAddress(name.encode()) or 0

    def __enter__(self):
        if not self._lib.OSMesaMakeCurrent(self._ctx, self._surface, _GL_UNSIGNED_BYTE, 2, 2):
            raise RuntimeError("OSMesaMakeCurrent failed")
        return self

    def __exit__(self, *args):
        pass

    def release(self):
        if self._ctx:
            self._lib.OSMesaDestroyContext(self._ctx)
            self._ctx = None


class ModernGLBackend(Backend):
    """moderngl on a headless EGL context (GPU or Mesa llvmpipe), or on OSMesa.

    Args:
        faces: (F, 3) triangle indices.
        n_vertices: vertex count of every frame.
        size: (width, height) in pixels.
        background: RGB floats in [0, 1].
        platform: "egl" or "osmesa".
        samples: multisample anti-aliasing samples (0 turns it off).
    """

    def __init__(self, faces: np.ndarray, n_vertices: int, size: tuple[int, int], background=(1.0, 1.0, 1.0), *,
                 platform: str = "egl", samples: int = 0, shading: str = "vertex"):
        import moderngl

        self.name = f"moderngl-{platform}"
        self.size = size
        if platform == "egl":
            self.ctx = moderngl.create_standalone_context(backend="egl", require=330)
        elif platform == "osmesa":
            moderngl.init_context(_OSMesaLoader())
            self.ctx = moderngl.get_context()
        else:
            raise InputError(f"unknown moderngl platform '{platform}'", "use 'egl' or 'osmesa'")
        try:
            self._setup(faces, n_vertices, background, samples, shading)
        except Exception:
            self.ctx.release()
            raise

    def _setup(self, faces, n_vertices, background, samples, shading):
        ctx = self.ctx
        with ctx:
            vertex_shader, fragment_shader = _SHADERS[shading]
            self.prog = ctx.program(vertex_shader=vertex_shader, fragment_shader=fragment_shader)
            directions = [np.asarray(d) / np.linalg.norm(d) for d, _ in LIGHTS]
            halves = [(d + (0.0, 0.0, 1.0)) / np.linalg.norm(d + (0.0, 0.0, 1.0)) for d in directions]
            self.prog["u_base"].value = BASE_COLOR
            self.prog["u_light_dir"].value = [tuple(d.tolist()) for d in directions]
            self.prog["u_light_half"].value = [tuple(h.tolist()) for h in halves]
            self.prog["u_light_w"].value = [w for _, w in LIGHTS]
            self.prog["u_ambient"].value = AMBIENT
            self.prog["u_specular"].value = SPECULAR
            self.ibo = ctx.buffer(np.ascontiguousarray(faces, dtype=np.uint32).tobytes())
            self.n_vertices = 0
            self._allocate(n_vertices)
            samples = min(int(samples), ctx.max_samples) if samples else 0
            self.samples = samples
            self.fbo = ctx.framebuffer(ctx.renderbuffer(self.size, 4, samples=samples),
                                       ctx.depth_renderbuffer(self.size, samples=samples))
            self.resolve = (ctx.framebuffer(ctx.renderbuffer(self.size, 4)) if samples else self.fbo)
            self.background = tuple(float(c) for c in background) + (1.0,)

    def _allocate(self, n_vertices: int) -> None:
        """(Re)create the per-vertex buffers for meshes of ``n_vertices`` vertices."""
        if self.n_vertices:
            for obj in (self.vao, self.vbo, self.cbo):
                obj.release()
        self.vbo = self.ctx.buffer(reserve=n_vertices * 24, dynamic=True)
        self.cbo = self.ctx.buffer(reserve=n_vertices * 12, dynamic=True)
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, "3f 3f", "in_pos", "in_normal"),
                                                     (self.cbo, "3f", "in_color")], index_buffer=self.ibo)
        self._packed = np.empty((n_vertices, 6), dtype=np.float32)
        self.n_vertices = n_vertices

    def draw(self, positions, normals, colors, camera, out):
        w, h = self.size
        # flip y so that glReadPixels (bottom row first) returns rows top to bottom
        proj = camera.projection_matrix(w / h) * np.array([[1.0], [-1.0], [1.0], [1.0]], dtype=np.float32)
        view = camera.view_matrix()
        with self.ctx:
            if len(positions) != self.n_vertices:
                self._allocate(len(positions))
            self._packed[:, :3] = positions
            self._packed[:, 3:] = normals
            self.vbo.write(self._packed)
            if colors is not None:
                self.cbo.write(np.ascontiguousarray(colors, dtype=np.float32))
            self.prog["u_use_color"].value = 1.0 if colors is not None else 0.0
            self.prog["u_mvp"].write((proj @ view).T.copy())
            self.prog["u_normal_matrix"].write(np.ascontiguousarray(view[:3, :3].T))
            self.fbo.use()
            self.fbo.clear(*self.background, depth=1.0)
            self.ctx.enable(self.ctx.DEPTH_TEST)
            self.vao.render()
            if self.resolve is not self.fbo:
                self.ctx.copy_framebuffer(self.resolve, self.fbo)
            self.resolve.read_into(out, components=3, alignment=1)

    def close(self):
        if getattr(self, "ctx", None) is not None:
            self.ctx.release()
            self.ctx = None


# --------------------------------------------------------------------------------------------- pyrender


def _import_pyrender():
    """Import pyrender, working around its numpy 2 break (np.infty was removed)."""
    if not hasattr(np, "infty"):
        np.infty = np.inf
    if "OpenGL" not in sys.modules:  # PyOpenGL picks its platform once, at first import
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender

    return pyrender


class PyrenderBackend(Backend):
    """pyrender's OffscreenRenderer, kept for users who have it (a new mesh node per frame)."""

    name = "pyrender"

    def __init__(self, faces: np.ndarray, n_vertices: int, size: tuple[int, int], background=(1.0, 1.0, 1.0), **_):
        self.pyrender = _import_pyrender()
        self.size = size
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self.renderer = self.pyrender.OffscreenRenderer(*size)
        self.scene = self.pyrender.Scene(bg_color=tuple(background) + (1.0,), ambient_light=(AMBIENT,) * 3)
        self.material = self.pyrender.MetallicRoughnessMaterial(
            baseColorFactor=BASE_COLOR + (1.0,), metallicFactor=0.0, roughnessFactor=0.7, doubleSided=True)
        self.camera_node = None
        self.light_nodes: list = []
        self.mesh_node = None
        self._camera = None

    def _set_camera(self, camera: Camera):
        pr = self.pyrender
        if self.camera_node is not None:
            self.scene.remove_node(self.camera_node)
        w, h = self.size
        if camera.ortho_scale is not None:
            cam = pr.OrthographicCamera(xmag=camera.ortho_scale * w / h, ymag=camera.ortho_scale,
                                        znear=camera.znear, zfar=camera.zfar)
        else:
            cam = pr.PerspectiveCamera(yfov=math.radians(camera.fov_deg), znear=camera.znear, zfar=camera.zfar,
                                       aspectRatio=w / h)
        pose = np.linalg.inv(camera.view_matrix().astype(np.float64))
        self.camera_node = self.scene.add(cam, pose=pose)
        for node in self.light_nodes:
            self.scene.remove_node(node)
        self.light_nodes = []
        for direction, weight in LIGHTS:  # lights ride with the camera, as in the moderngl shader
            z = np.asarray(direction, dtype=np.float64)
            z /= np.linalg.norm(z)
            x = np.cross((0.0, 1.0, 0.0), z) if abs(z[1]) < 0.99 else np.array([1.0, 0.0, 0.0])
            x /= np.linalg.norm(x)
            light_pose = np.eye(4)
            light_pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
            self.light_nodes.append(self.scene.add(pr.DirectionalLight(intensity=weight * 2.2), pose=pose @ light_pose))
        self._camera = camera

    def draw(self, positions, normals, colors, camera, out):
        pr = self.pyrender
        if camera is not self._camera:
            self._set_camera(camera)
        if self.mesh_node is not None:
            self.scene.remove_node(self.mesh_node)
        primitive = pr.Primitive(positions=positions, normals=normals, indices=self.faces,
                                 color_0=None if colors is None else np.asarray(colors, dtype=np.float32),
                                 material=self.material)
        self.mesh_node = self.scene.add(pr.Mesh([primitive]))
        color, _ = self.renderer.render(self.scene)
        out[...] = color[..., :3]

    def close(self):
        if getattr(self, "renderer", None) is not None:
            self.renderer.delete()
            self.renderer = None


# --------------------------------------------------------------------------------------------- selection


def backend_names(backend: str) -> tuple[str, ...]:
    """The backends ``backend`` names, in the order they are tried; an InputError for a name that is none."""
    key = str(backend).lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in BACKENDS:
        return (key,)
    raise InputError(f"unknown render backend '{backend}'",
                     f"choose one of: {', '.join(('auto', 'moderngl', 'egl', 'osmesa') + BACKENDS)}")


def _make(name: str, faces, n_vertices, size, background, samples, shading) -> Backend:
    if name == "pyrender":
        return PyrenderBackend(faces, n_vertices, size, background)
    return ModernGLBackend(faces, n_vertices, size, background, platform=name.split("-", 1)[1], samples=samples,
                           shading=shading)


def create_backend(backend: str, faces: np.ndarray, n_vertices: int, size: tuple[int, int],
                   background=(1.0, 1.0, 1.0), samples: int = 0, shading: str = "vertex") -> Backend:
    """Open the first backend that works among those ``backend`` names.

    ``backend``: "auto" (moderngl-EGL, then moderngl-OSMesa, then pyrender), "moderngl", "egl",
    "osmesa", "moderngl-egl", "moderngl-osmesa" or "pyrender".
    Raises :class:`MissingDependencyError` naming what to install when none works.
    """
    names = backend_names(backend)
    failures: list[tuple[str, BaseException]] = []
    for name in names:
        try:
            return _make(name, faces, n_vertices, size, background, samples, shading)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported together below
            failures.append((name, exc))
    raise _no_backend_error(backend, failures)


def _no_backend_error(backend: str, failures) -> MissingDependencyError:
    reasons = "; ".join(f"{name}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
                        for name, exc in failures)
    names = [name for name, _ in failures]
    moderngl_missing = any(isinstance(exc, ImportError) and "moderngl" in str(exc) for _, exc in failures)
    fixes = []
    if moderngl_missing:
        fixes.append("install moderngl with: pip install 'jambatalk[render]'")
    else:
        if "moderngl-egl" in names:
            fixes.append("install Mesa's EGL and OpenGL drivers (Debian/Ubuntu: apt-get install libegl1 "
                         "libgl1-mesa-dri; Fedora: dnf install mesa-libEGL mesa-dri-drivers) or a GPU driver with EGL")
        if "moderngl-osmesa" in names:
            fixes.append("install OSMesa (Debian/Ubuntu: apt-get install libosmesa6; Fedora: dnf install mesa-libOSMesa)")
    if names == ["pyrender"]:
        fixes.append("install pyrender (pip install pyrender), or use backend='auto'")
    return MissingDependencyError(f"no offscreen renderer could be opened for backend '{backend}' ({reasons})",
                                  "; or ".join(fixes))


def available_backends(probe: bool = True) -> list[str]:
    """Backends that can open a context here (each probed with a tiny render target)."""
    found = []
    tri = np.array([[0, 1, 2]], dtype=np.uint32)
    for name in BACKENDS:
        if not probe:
            found.append(name)
            continue
        try:
            _make(name, tri, 3, (8, 8), (1.0, 1.0, 1.0), 0, "vertex").close()
            found.append(name)
        except Exception:  # noqa: BLE001 - unavailable
            continue
    return found
