"""The web page people use to try the model, served by the API's own FastAPI app (so by the
Ray Serve ingress, on the same port, with no other service to run):

- ``GET /`` (also ``/ui/try``): paste a review and/or drop a product photo, see the label, the
  score of every label, the modalities read, and the similar indexed reviews;
- ``GET /ui/recent``: this replica's recent predictions by product category over time, drawn as
  an inline SVG chart from ``GET /v1/predictions/recent``, with the same numbers as tables.

Plain HTML, CSS and JavaScript under ``static/`` (package data: they ship in the wheel); no
framework, no build step, nothing fetched from the internet (the pages' Content-Security-Policy
only admits this origin).
"""

from services.inference.web.router import STATIC_DIR, mount_ui, router

__all__ = ["STATIC_DIR", "mount_ui", "router"]
