"""Numerical operators with a pure-PyTorch path and an optional fused kernel behind one signature."""

from .selective_scan import selective_scan, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
