"""Headless mesh rendering and evaluation videos.

``Renderer`` draws frames offscreen (moderngl on EGL, else OSMesa, else pyrender) with one GL
context for all frames; ``render_video`` / ``render_grid`` write H.264 MP4s with the audio muxed
in; ``error_colors`` makes per-vertex error heatmaps. GL and video libraries are imported only
when a renderer or a video is made, so importing this package stays light.
"""

from .backends import BACKENDS, available_backends
from .camera import CAMERA_PRESETS, Camera, camera_preset, fit_camera, resolve_camera
from .colors import colormap, error_colors, vertex_errors
from .renderer import Renderer
from .video import fit_audio, render_comparison, render_grid, render_video

__all__ = [
    "Renderer",
    "Camera",
    "CAMERA_PRESETS",
    "BACKENDS",
    "available_backends",
    "camera_preset",
    "fit_camera",
    "resolve_camera",
    "colormap",
    "error_colors",
    "vertex_errors",
    "render_video",
    "render_grid",
    "render_comparison",
    "fit_audio",
]
