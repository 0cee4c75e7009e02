"""The bottom layer for compiled code: where every package caches what it compiles (`cache_dir`).

Both the simulator's renderer (`envs.server.render.native`, a C rasterizer loaded with ctypes) and the policy's
packed ternary kernel (`agent.runtime`, a C++ torch extension) build their sources on first use and keep the
result here; neither package imports the other. This package imports nothing from slimdrive.
"""
from native.cache import cache_dir

__all__ = ["cache_dir"]
