"""Camera rendering for the embedded simulator: numpy/OpenCV and a small C rasterizer, no GPU.

`scene` builds a map's static geometry once (ground texture, buildings, trees, poles), `shapes` turns actors
into boxes, `raster` (with `zbuffer.c`) projects boxes and the textured ground plane into id/depth/tag buffers
with exact per-pixel occlusion, `shade` and `weather` turn those into lit RGB, and `renderer.Renderer` ties them
together per world and per tick.
"""
