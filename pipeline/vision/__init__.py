"""Geometry (letterbox, head frame), video I/O and the MediaPipe adapter."""
