"""The procedural head: a face-like mesh in FLAME's convention, with named regions and motion weights.

:func:`default_head` builds it from code (no data files): a closed-ish surface of about three
thousand vertices, metres, y up, looking along +z, centred on the origin. The mouth is a slit in
the topology (the upper and lower lip edges are distinct vertices that coincide at rest), so
rotating the jaw parts the lips; behind the slit a mouth cavity keeps the surface closed. The eyes
are slits with eyeballs behind them, open at rest, so the eyelids can close for blinks.

:class:`Head` holds the mesh, its named regions (index arrays) and per-vertex weight fields that
:mod:`jambatalk.synth.motion` uses to deform it. :meth:`Head.from_template` derives the same fields
for any template given its regions (e.g. FLAME with FLAME_masks.pkl).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..mesh import check_vertices, extent

__all__ = ["Head", "default_head", "derive_weights", "REQUIRED_REGIONS", "WEIGHT_NAMES"]

#: Regions every :class:`Head` has.
REQUIRED_REGIONS = ("lips", "upper_lip", "lower_lip", "jaw", "upper_face", "eyelids", "brows")
#: Per-vertex weight fields every :class:`Head` has, each (V,) float32 in [0, 1].
#: the most a lip region's vertices may lie from their centre (median), as a share of the head's bounding-box
#: diagonal: FLAME's lips lie within 4.4%, BIWI's (the whole mouth area) within 11.6%, and indices made for
#: another mesh scatter over the whole head (FLAME's lips on the BIWI mesh: 24.7%).
LIPS_SPREAD_MAX = 0.2
WEIGHT_NAMES = ("jaw", "lip_seal", "lips", "upper_lip", "lower_lip", "eyelid_upper", "eyelid_lower", "brows")


@dataclass
class Head:
    """A template mesh with named regions and the weight fields that drive its motion.

    Attributes:
        vertices: (V, 3) float32, metres, y up, face looking along +z.
        faces: (F, 3) int64.
        regions: name -> int64 vertex indices (at least :data:`REQUIRED_REGIONS`).
        weights: name -> (V,) float32 deformation weights (:data:`WEIGHT_NAMES`).
        anchors: named points and sizes: ``mouth_center`` (3,), ``jaw_hinge`` (3,), ``eye_opening`` (m),
            ``mouth_width`` (m).
    """

    vertices: np.ndarray
    faces: np.ndarray
    regions: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    anchors: dict[str, np.ndarray | float] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def validate(self) -> Head:
        """Check shapes, index ranges and the presence of every required region and weight."""
        v = self.n_vertices
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or (self.faces.size and (
                self.faces.min() < 0 or self.faces.max() >= v)):
            raise InputError(f"head faces of shape {self.faces.shape} do not index its {v} vertices",
                             "pass (F, 3) faces with indices in [0, V)")
        for name in REQUIRED_REGIONS:
            if name not in self.regions:
                raise InputError(f"head has no region '{name}'", f"give regions including: {', '.join(REQUIRED_REGIONS)}")
        for name, idx in self.regions.items():
            if idx.size and (idx.min() < 0 or idx.max() >= v):
                raise InputError(f"region '{name}' indexes past the head's {v} vertices", "fix the region indices")
        for name in WEIGHT_NAMES:
            w = self.weights.get(name)
            if w is None or w.shape != (v,):
                raise InputError(f"head weight field '{name}' is missing or not of shape ({v},)",
                                 "build heads with default_head() or Head.from_template()")
        return self

    @classmethod
    def from_template(cls, vertices, faces, regions: dict) -> Head:
        """A :class:`Head` for any template given its regions.

        ``regions`` needs ``"lips"``; it may also have ``"forehead"``, ``"eye_region"``, ``"left_eyeball"``,
        ``"right_eyeball"`` (the names of FLAME_masks.pkl). Upper/lower lip, jaw, eyelid and brow
        fields are derived geometrically from the lip region and the vertex positions.
        """
        vertices = check_vertices(vertices, "template")
        faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        regions = {str(k): np.unique(np.asarray(idx, dtype=np.int64).ravel()) for k, idx in dict(regions).items()}
        if "lips" not in regions or regions["lips"].size < 3:
            raise InputError("the template's regions have no 'lips' entry (or fewer than 3 vertices)",
                             "pass regions with the lip vertex indices, e.g. FLAME_masks.pkl['lips']")
        for name, idx in regions.items():
            if idx.size and (idx.min() < 0 or idx.max() >= len(vertices)):
                raise InputError(f"region '{name}' indexes past the template's {len(vertices)} vertices",
                                 "use regions made for this topology")
        lips = vertices[regions["lips"]]
        spread = float(np.median(np.linalg.norm(lips - lips.mean(axis=0), axis=1)))
        size = extent(vertices)
        if spread > LIPS_SPREAD_MAX * size:
            raise InputError(f"the 'lips' region is scattered over the template: its vertices lie a median "
                             f"{spread / size:.0%} of the head's size from their centre, where a mouth's lie within "
                             f"{LIPS_SPREAD_MAX:.0%} (FLAME's: 4%, BIWI's: 12%), so the regions were made for "
                             "another mesh", "use regions made for this mesh's vertex order")
        weights, derived, anchors = derive_weights(vertices, regions)
        merged = {**derived, **{k: v for k, v in regions.items() if k not in derived or k == "lips"}}
        if "forehead" in regions or "eye_region" in regions:
            merged["upper_face"] = np.unique(np.concatenate([regions.get("forehead", np.zeros(0, np.int64)),
                                                             regions.get("eye_region", np.zeros(0, np.int64))]))
        return cls(vertices, faces, merged, weights, anchors).validate()


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def derive_weights(vertices: np.ndarray, regions: dict, side: np.ndarray | None = None,
                   eye_centers: np.ndarray | None = None, eye_opening: float | None = None):
    """Motion weight fields and derived regions from vertex positions and a lip region.

    Args:
        vertices: (V, 3) template.
        regions: needs ``"lips"``; optional ``"left_eyeball"``, ``"right_eyeball"``.
        side: optional (V,) array, +1 for the upper lip edge / -1 for the lower one where the two
            coincide (a slit mouth); elsewhere 0 and the sign comes from the height above the mouth line.
        eye_centers: optional (2, 3) eye centres; else from the eyeball regions or a guess from the mouth.
        eye_opening: lid gap in metres (default: 0.2 x mouth width).
    Returns:
        (weights, regions, anchors): dicts of (V,) float32 fields, int64 index arrays and anchor values.
    """
    v = np.asarray(vertices, dtype=np.float64)
    lips = v[regions["lips"]]
    center = lips.mean(axis=0)
    width = float(np.ptp(lips[:, 0])) * 0.85
    s = width / 0.05  # sizes below are for a 5 cm mouth and scale with it
    x = v[:, 0] - center[0]
    dy = v[:, 1] - center[1]
    z = v[:, 2]
    if side is None:
        side = np.zeros(len(v))
    sgn = np.where(side != 0, side, np.sign(dy) + (dy == 0))
    front = _smoothstep((z - (center[2] - 0.07 * s)) / (0.05 * s))
    half = width / 2.0
    # jaw: 1 below the mouth line, 0 above; a sharp step across the lips, a soft one over the cheeks
    blend = 0.0008 * s + 0.02 * s * _smoothstep((np.abs(x) - 0.9 * half) / (0.9 * half))
    signed = np.where(side != 0, side * blend, dy)  # the two copies of a slit edge: exactly 0 and 1
    jaw = _smoothstep(0.5 - signed / (2.0 * blend))
    jaw *= _smoothstep((v[:, 1] - (center[1] - 0.11 * s)) / (0.045 * s))  # the neck stays
    jaw *= front * _smoothstep((0.075 * s - np.abs(x)) / (0.03 * s))
    lip_core = np.exp(-(x / (0.8 * width)) ** 2 - (dy / (0.016 * s)) ** 2) * front
    within = _smoothstep((1.05 * half - np.abs(x)) / (0.25 * half))
    lower_lip = (sgn < 0) * within * np.exp(-(dy / (0.011 * s)) ** 2) * front
    upper_lip = (sgn > 0) * within * np.exp(-(dy / (0.011 * s)) ** 2) * front
    lip_seal = (sgn < 0) * _smoothstep((1.1 * half - np.abs(x)) / (0.3 * half)) * np.exp(-(dy / (0.014 * s)) ** 2)
    # eyes
    if eye_centers is None:
        if "left_eyeball" in regions and "right_eyeball" in regions:
            eye_centers = np.stack([v[regions["left_eyeball"]].mean(0), v[regions["right_eyeball"]].mean(0)])
        else:
            eye_centers = np.stack([center + np.array([sx * 0.032, 0.075, -0.012]) * s for sx in (1, -1)])
    eye_centers = np.asarray(eye_centers, dtype=np.float64)
    eye_opening = float(eye_opening if eye_opening is not None else 0.2 * width)
    lid_up = np.zeros(len(v))
    lid_low = np.zeros(len(v))
    brows = np.zeros(len(v))
    eyeball = np.zeros(len(v), dtype=bool)
    for name in ("left_eyeball", "right_eyeball", "eyeballs"):
        if name in regions:
            eyeball[regions[name]] = True
    for c in eye_centers:
        ex = (v[:, 0] - c[0]) / (0.016 * s)
        ey = v[:, 1] - c[1]
        infront = _smoothstep((v[:, 2] - c[2]) / (0.006 * s))
        lens = np.clip(1.0 - ex ** 2, 0.0, 1.0) ** 0.7 * infront
        lid_up = np.maximum(lid_up, lens * np.exp(-(np.clip(ey, 0, None) / (0.007 * s)) ** 2) * (ey >= -1e-4))
        lid_low = np.maximum(lid_low, lens * np.exp(-(np.clip(-ey, 0, None) / (0.006 * s)) ** 2) * (ey < -1e-4))
        bx = (v[:, 0] - c[0]) / (0.024 * s)
        by = (v[:, 1] - c[1] - 0.02 * s) / (0.013 * s)
        brows = np.maximum(brows, np.exp(-bx ** 2 - by ** 2) * infront)
    lid_up[eyeball] = 0.0
    lid_low[eyeball] = 0.0
    brows[eyeball] = 0.0
    weights = {
        "jaw": jaw, "lip_seal": lip_seal * jaw, "lips": lip_core, "upper_lip": upper_lip, "lower_lip": lower_lip,
        "eyelid_upper": lid_up, "eyelid_lower": lid_low, "brows": brows,
    }
    weights = {k: np.ascontiguousarray(np.clip(w, 0.0, 1.0), dtype=np.float32) for k, w in weights.items()}
    top = eye_centers[:, 1].mean()
    upper_face = np.nonzero((v[:, 1] > top - 0.02 * s) & (front > 0.5) & (np.abs(x) < 0.065 * s) & ~eyeball)[0]
    derived = {
        "lips": np.nonzero(lip_core > 0.3)[0],
        "upper_lip": np.nonzero((lip_core > 0.3) & (sgn > 0))[0],
        "lower_lip": np.nonzero((lip_core > 0.3) & (sgn < 0))[0],
        "jaw": np.nonzero(jaw > 0.5)[0],
        "eyelids": np.nonzero(np.maximum(lid_up, lid_low) > 0.2)[0],
        "brows": np.nonzero(brows > 0.3)[0],
        "upper_face": upper_face,
    }
    derived = {k: idx.astype(np.int64) for k, idx in derived.items()}
    anchors = {
        "mouth_center": center.astype(np.float32),
        "jaw_hinge": (center + np.array([0.0, 0.04, -0.085]) * s).astype(np.float32),
        "eye_opening": eye_opening,
        "mouth_width": width,
    }
    return weights, derived, anchors


# --------------------------------------------------------------------------- the procedural head

# Profile of the head along its height: y -> (half width, front depth, back depth), metres.
_PROFILE = np.array([
    [-0.175, 0.048, 0.040, 0.050], [-0.130, 0.050, 0.042, 0.052], [-0.105, 0.052, 0.050, 0.058],
    [-0.085, 0.058, 0.060, 0.068], [-0.060, 0.066, 0.061, 0.080], [-0.047, 0.069, 0.059, 0.085],
    [-0.020, 0.074, 0.060, 0.092], [0.010, 0.078, 0.058, 0.097], [0.028, 0.079, 0.055, 0.099],
    [0.050, 0.079, 0.056, 0.100], [0.075, 0.077, 0.052, 0.098], [0.092, 0.072, 0.046, 0.092],
    [0.105, 0.064, 0.038, 0.082], [0.118, 0.052, 0.028, 0.066], [0.128, 0.038, 0.019, 0.048],
    [0.134, 0.026, 0.013, 0.033], [0.140, 0.000, 0.000, 0.000],
])
_ROWS = np.array([
    -0.175, -0.155, -0.135, -0.115,
    -0.100, -0.092, -0.085, -0.078, -0.071, -0.065,
    -0.060, -0.056, -0.052, -0.0495, -0.047, -0.0445, -0.042, -0.038, -0.034, -0.030,
    -0.024, -0.017, -0.010, -0.003, 0.004, 0.010,
    0.015, 0.019, 0.022, 0.025, 0.028, 0.031, 0.034, 0.038, 0.042,
    0.048, 0.055, 0.063, 0.072, 0.082, 0.092,
    0.102, 0.112, 0.121, 0.128, 0.134,
])
_N_COLUMNS = 60
_MOUTH_Y, _MOUTH_HALF = -0.047, 0.024
_EYE_Y, _EYE_X = 0.028, (0.019, 0.046)
_LID_UP, _LID_LOW = 0.0055, 0.0035
_EYE_RADIUS = 0.0115


def _bumps(x, y):
    """Facial relief (forward displacement, metres) at face coordinates x, y."""
    g = lambda cx, cy, sx, sy: np.exp(-((x - cx) / sx) ** 2 - ((y - cy) / sy) ** 2)  # noqa: E731
    nose_amp = 0.021 * np.exp(-((y + 0.010) / 0.011) ** 2) + 0.008 * np.exp(-((y - 0.014) / 0.016) ** 2)
    nose_w = 0.0065 + 0.0065 * np.exp(-((y + 0.012) / 0.012) ** 2)
    dz = nose_amp * np.exp(-(x / nose_w) ** 2)
    dz += 0.0045 * (g(-0.011, -0.016, 0.005, 0.005) + g(0.011, -0.016, 0.005, 0.005))  # nose wings
    for sx in (-1.0, 1.0):
        dz += -0.007 * g(sx * 0.032, 0.026, 0.016, 0.012)  # eye socket
        dz += 0.003 * g(sx * 0.030, 0.046, 0.020, 0.006)  # brow ridge
        dz += 0.005 * g(sx * 0.043, 0.000, 0.015, 0.015)  # cheekbone
        dz += -0.0025 * g(sx * 0.025, _MOUTH_Y, 0.004, 0.004)  # mouth corners
    dz += 0.0055 * g(0.0, -0.0405, 0.016, 0.0055)  # upper lip
    dz += 0.0045 * g(0.0, -0.0540, 0.015, 0.0055)  # lower lip
    dz += -0.003 * g(0.0, -0.0645, 0.020, 0.004)  # below the lower lip
    dz += 0.005 * g(0.0, -0.079, 0.014, 0.008)  # chin
    return dz


def _sphere(center, radius, rings=8, segments=12):
    """UV sphere with its pole along +z; returns vertices and faces (outward)."""
    verts = [center + np.array([0.0, 0.0, radius])]
    for r in range(1, rings):
        th = np.pi * r / rings
        for s in range(segments):
            ph = 2 * np.pi * s / segments
            verts.append(center + radius * np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)]))
    verts.append(center + np.array([0.0, 0.0, -radius]))
    faces = []
    ring = lambda r, s: 1 + (r - 1) * segments + s % segments  # noqa: E731
    last = len(verts) - 1
    for s in range(segments):
        faces.append([0, ring(1, s), ring(1, s + 1)])
        faces.append([last, ring(rings - 1, s + 1), ring(rings - 1, s)])
        for r in range(1, rings - 1):
            faces.append([ring(r, s), ring(r + 1, s), ring(r + 1, s + 1)])
            faces.append([ring(r, s), ring(r + 1, s + 1), ring(r, s + 1)])
    return np.array(verts), np.array(faces, dtype=np.int64)


def _build() -> Head:
    from scipy.interpolate import PchipInterpolator

    prof = [PchipInterpolator(_PROFILE[:, 0], _PROFILE[:, k]) for k in (1, 2, 3)]
    nr, nc = len(_ROWS), _N_COLUMNS
    s = -1.0 + 2.0 * np.arange(nc) / nc
    az = np.pi * s - 0.72 * np.sin(np.pi * s)  # columns dense at the front (azimuth 0)
    yy = np.repeat(_ROWS[:, None], nc, axis=1)
    w, zf, zb = (p(yy) for p in prof)
    depth = zb + (zf - zb) * (1.0 + np.cos(az)) / 2.0
    x = w * np.sin(az)
    z = depth * np.cos(az)
    front = np.clip(np.cos(az), 0.0, 1.0) ** 2
    z = z + front * _bumps(x, yy)
    grid = np.stack([x, yy, z], axis=-1)  # (nr, nc, 3)
    idx = np.arange(nr * nc).reshape(nr, nc)
    verts = [grid.reshape(-1, 3)]
    n = nr * nc
    side = np.zeros(n)

    def slit(row, cols):
        """Duplicate the interior vertices of a slit along ``row`` between columns cols[0] < cols[1]."""
        nonlocal n
        inner = np.arange(cols[0] + 1, cols[1])
        dup = np.arange(n, n + len(inner))
        verts.append(grid[row, inner])
        n += len(inner)
        lower = idx[row].copy()
        lower[inner] = dup
        return inner, dup, lower

    def col_at(row, xt):
        return int(np.argmin(np.abs(grid[row, :, 0] - xt) + 10.0 * (grid[row, :, 2] < 0)))

    i_m = int(np.argmin(np.abs(_ROWS - _MOUTH_Y)))
    m_cols = (col_at(i_m, -_MOUTH_HALF), col_at(i_m, _MOUTH_HALF))
    m_inner, m_dup, m_lower = slit(i_m, m_cols)
    i_e = int(np.argmin(np.abs(_ROWS - _EYE_Y)))
    eyes = []
    for sx in (1.0, -1.0):
        c0, c1 = sorted((col_at(i_e, sx * _EYE_X[0]), col_at(i_e, sx * _EYE_X[1])))
        eyes.append(((c0, c1),) + slit(i_e, (c0, c1)))
    side = np.concatenate([side, np.zeros(n - len(side))])
    side[idx[i_m, m_inner]] = 1.0
    side[m_dup] = -1.0
    v = np.concatenate(verts).astype(np.float64)

    # faces of the grid; the quad row just below a slit row uses the slit's lower copies
    faces = []
    for i in range(nr - 1):
        top = idx[i + 1].copy()
        if i + 1 == i_m:
            top = m_lower
        if i + 1 == i_e:
            for _cols, inner, dup, _lower in eyes:
                top[inner] = dup
        bot = idx[i]
        for j in range(nc):
            k = (j + 1) % nc
            faces.append([bot[j], bot[k], top[k]])
            faces.append([bot[j], top[k], top[j]])
    bottom_pole, top_pole = n, n + 1
    zmid_b = (prof[1](_ROWS[0]) - prof[2](_ROWS[0])) / 2.0
    v = np.concatenate([v, [[0.0, _ROWS[0] - 0.003, zmid_b], [0.0, _PROFILE[-1, 0], 0.0]]])
    n += 2
    for j in range(nc):
        k = (j + 1) % nc
        faces.append([bottom_pole, idx[0, k], idx[0, j]])
        faces.append([top_pole, idx[-1, j], idx[-1, k]])

    # open the eyes: lids move apart in a lens shape (upper lid further than the lower)
    lid_w = [np.zeros(n), np.zeros(n)]
    for (c0, c1), _inner, dup, _lower in eyes:
        x0, x1 = grid[i_e, c0, 0], grid[i_e, c1, 0]
        lo, hi = min(x0, x1), max(x0, x1)
        lens = np.clip(np.sin(np.pi * (v[:, 0] - lo) / (hi - lo)), 0.0, 1.0) ** 0.7
        lens *= (v[:, 0] > lo) & (v[:, 0] < hi) & (v[:, 2] > 0)
        dyv = v[:, 1] - _EYE_Y
        is_lower = np.zeros(n, dtype=bool)
        is_lower[dup] = True
        up = (dyv > 0) | ((np.abs(dyv) < 1e-9) & ~is_lower)
        shift = np.where(up, _LID_UP * np.exp(-(np.clip(dyv, 0, None) / 0.006) ** 2),
                         -_LID_LOW * np.exp(-(np.clip(-dyv, 0, None) / 0.006) ** 2))
        v[:, 1] += lens * shift
        lid_w[0] = np.maximum(lid_w[0], lens * np.where(up, shift / _LID_UP, 0.0))
        lid_w[1] = np.maximum(lid_w[1], lens * np.where(up, 0.0, -shift / _LID_LOW))
    eye_centers = []
    eye_parts = []
    for (c0, c1), inner, _dup, _lower in eyes:
        mid = inner[len(inner) // 2]
        cx = (grid[i_e, c0, 0] + grid[i_e, c1, 0]) / 2.0
        zc = grid[i_e, mid, 2] - 0.0012 - _EYE_RADIUS
        center = np.array([cx, _EYE_Y + (_LID_UP - _LID_LOW) / 2.0, zc])
        eye_centers.append(center)
        ev, ef = _sphere(center, _EYE_RADIUS)
        eye_parts.append((np.arange(n, n + len(ev)), ef + n))
        v = np.concatenate([v, ev])
        n += len(ev)
        faces.extend(eye_parts[-1][1].tolist())

    # mouth cavity: a pouch behind the slit joining the upper edge to the lower edge
    k_rings = 6
    up_edge = idx[i_m]
    cavity = []
    ring_of = {}
    for c in range(m_cols[0], m_cols[1] + 1):
        if c in (m_cols[0], m_cols[1]):
            ring_of[c] = [idx[i_m, c]] * (k_rings + 1)
            continue
        e = v[up_edge[c]]
        ring = [up_edge[c]]
        for kk in range(1, k_rings):
            ph = np.pi * kk / k_rings
            p = np.array([e[0] * (1.0 - 0.35 * np.sin(ph)), _MOUTH_Y + 0.007 * np.sin(2 * ph),
                          e[2] - 0.02 * np.sin(ph)])
            v = np.concatenate([v, p[None]])
            cavity.append((n, kk / k_rings, up_edge[c], m_lower[c]))
            ring.append(n)
            n += 1
        ring.append(m_lower[c])
        ring_of[c] = ring
    for c in range(m_cols[0], m_cols[1]):
        a, b = ring_of[c], ring_of[c + 1]
        for kk in range(k_rings):
            tri1 = [a[kk], a[kk + 1], b[kk + 1]]
            tri2 = [a[kk], b[kk + 1], b[kk]]
            for tri in (tri1, tri2):
                if len(set(tri)) == 3:
                    faces.append(tri)
    faces = np.array(faces, dtype=np.int64)
    side = np.concatenate([side, np.zeros(n - len(side))])

    # centre like FLAME's template (vertex mean at the origin)
    offset = v.mean(axis=0)
    v -= offset
    eye_centers = np.array(eye_centers) - offset
    mouth_idx = np.concatenate([idx[i_m, m_cols[0]:m_cols[1] + 1], m_dup])
    pre_regions = {"lips": mouth_idx,
                   "eyeballs": np.concatenate([p[0] for p in eye_parts])}
    weights, derived, anchors = derive_weights(v, pre_regions, side=side, eye_centers=eye_centers,
                                               eye_opening=_LID_UP + _LID_LOW)
    # the cavity follows its edges: blend the edge weights along the pouch
    for vid, t, u_id, l_id in cavity:
        tt = _smoothstep(np.array(t))
        for w in weights.values():
            w[vid] = (1 - tt) * w[u_id] + tt * w[l_id]
    for name, w in zip(("eyelid_upper", "eyelid_lower"), lid_w):  # exact: the fraction of the opening shift
        weights[name] = np.concatenate([w, np.zeros(len(v) - len(w))]).astype(np.float32)
    derived["eyelids"] = np.nonzero(np.maximum(*lid_w) > 0.2)[0].astype(np.int64)
    eyeballs = pre_regions["eyeballs"]
    regions = dict(derived)
    regions["eyeballs"] = eyeballs
    regions["mouth_cavity"] = np.array([c[0] for c in cavity], dtype=np.int64)
    inside = np.concatenate([regions["mouth_cavity"], eyeballs])
    for name in ("lips", "upper_lip", "lower_lip"):
        regions[name] = np.setdiff1d(regions[name], inside)
    regions["mouth_upper_edge"] = idx[i_m, m_inner].astype(np.int64)
    regions["mouth_lower_edge"] = m_dup.astype(np.int64)
    regions["face"] = np.nonzero((v[:, 2] > 0.0) & (np.abs(v[:, 0]) < 0.07) & (v[:, 1] > -0.11))[0].astype(np.int64)
    nose = _bumps(v[:, 0], v[:, 1] + offset[1]) > 0.006
    regions["nose"] = np.nonzero(nose & (v[:, 2] > 0.03) & (np.abs(v[:, 1] + offset[1] + 0.005) < 0.03))[0]
    regions = {k: np.asarray(r, dtype=np.int64) for k, r in regions.items()}
    head = Head(v.astype(np.float32), faces, regions, weights, anchors)
    return head.validate()


@functools.lru_cache(maxsize=1)
def _cached() -> Head:
    head = _build()
    for arr in [head.vertices, head.faces, *head.regions.values(), *head.weights.values()]:
        arr.flags.writeable = False
    return head


def default_head() -> Head:
    """The procedural head (built once per process, read-only arrays; deterministic)."""
    return _cached()
