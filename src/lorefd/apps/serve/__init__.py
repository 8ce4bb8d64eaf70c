"""``lorefd serve``: the detector as an HTTP API and a self-contained web page.

:func:`create_app` builds the FastAPI application around one :class:`Service`:

* ``POST /v1/detect`` (multipart, one or more files; ``?heatmap=true``): the report of
  :mod:`lorefd.engines.report_schema` (the ``detect --json`` schema) with ``path`` = the
  uploaded file's name and ``heatmap`` = a URL under ``/v1/results/{id}/heatmap/``;
* ``GET /v1/results/{id}/heatmap/{n}.png|mp4``: kept ``keep_minutes``, then deleted;
* ``GET /v1/model``, ``GET /health``, ``GET /`` (the page), OpenAPI docs at ``/docs``.

Limits: a body above ``max_upload_mb`` is refused with 413 from its ``Content-Length`` before
anything is read, or as soon as the streamed bytes pass the limit; file types are decided by
their first bytes (415 for anything that is not an image or video detect can read); the model
is loaded once and runs in a pool of ``workers`` threads (at most that many inferences at
once); ``workers + queue`` requests are admitted at a time, the next gets 503 with
``Retry-After``. Uploads are written under a random name in a private temporary folder and
deleted when their request ends; no name or path from a request reaches the filesystem.
"""

from __future__ import annotations

from lorefd.apps.serve.routes import create_app
from lorefd.apps.serve.service import ServeOptions, Service
from lorefd.apps.serve.store import ResultStore
from lorefd.apps.serve.uploads import sniff

__all__ = ["ResultStore", "ServeOptions", "Service", "create_app", "sniff"]
