"""Serving: `nasjax serve`, an HTTP detection API with dynamic batching (docs/serving.md).

batcher.py: requests coalesced into the compiled batch sizes, one device step per batch (no HTTP).
app.py: the FastAPI endpoints over it (`Service`, `create_app`). server.py: uvicorn on a socket bound
here, so a taken port is a clear error. ray_serve.py: the same service as a Ray Serve deployment.
"""
