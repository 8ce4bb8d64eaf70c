"""`lorefd serve`: an HTTP API and a web page for screening faces (FastAPI + uvicorn).

    lorefd serve --model model.lorefd                  # http://127.0.0.1:8000/  (docs: /docs)
    lorefd serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"

The same scores, heatmaps and statuses as `lorefd detect`, answered in its JSON schema.
Binds 127.0.0.1 by default; any other address needs a token (`--token` or
$LOREFD_SERVE_TOKEN), and then every /v1 call needs `Authorization: Bearer TOKEN`.
Uploads are deleted when their request ends; heatmaps after --keep-minutes.

MODEL is a bundle, a training run folder or a checkpoint folder (default: the shipped model).
Exit status: 2 when it cannot start (no model, unusable model, no token on a public address).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from lorefd.cli.common import (
    add_device_arg,
    add_model_arg,
    add_runtime_arg,
    cap_threads,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)

TOKEN_ENV = "LOREFD_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page for screening faces",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", default=None,
                   help=f"require `Authorization: Bearer TOKEN` on every API call "
                        f"(default: ${TOKEN_ENV})")
    p.add_argument("--max-upload-mb", type=positive_float, default=200.0,
                   help="largest request body in MB (MiB); larger gets 413 (default 200)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="inferences at a time, in threads sharing the model (default 1)")
    p.add_argument("--queue", type=non_negative_int, default=8,
                   help="requests that may wait beyond --workers; more get 503 (default 8)")
    p.add_argument("--per-client", type=positive_int, default=2,
                   help="requests one client address may have in at a time; more get 429 "
                        "(default 2). Uploads that stall 10 s or trickle below 16 KB/s get 408")
    p.add_argument("--keep-minutes", type=positive_float, default=10.0,
                   help="how long heatmaps stay downloadable (default 10)")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="frames sampled evenly per video (default: the bundle's, 32)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="decision threshold (default: the bundle's)")
    add_device_arg(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of the runtime (default: its own)")
    add_runtime_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="faces per forward pass (default 4 on CPU, 32 on CUDA)")
    p.add_argument("--retinaface-weights", default=None, metavar="PATH",
                   help="for bundles preprocessed with RetinaFace")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.models.bundle import resolve_model

    def fail(msg: str) -> int:
        print(f"lorefd serve: error: {msg}", file=sys.stderr)
        return 2

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        return fail(f"binding {args.host} makes the service reachable from other machines: "
                    f"set a token with --token or ${TOKEN_ENV} (or bind 127.0.0.1)")
    model = resolve_model(args.model)  # BundleError ("--model is required" when none shipped)
    import uvicorn

    from lorefd.apps.serve import ServeOptions, Service, create_app
    from lorefd.apps.serve.protocol import header_deadline

    opts = ServeOptions(max_upload_mb=args.max_upload_mb, workers=args.workers,
                        queue=args.queue, keep_minutes=args.keep_minutes, token=token,
                        frames=args.frames, threshold=args.threshold, device=args.device,
                        batch_size=args.batch_size, retinaface_weights=args.retinaface_weights,
                        runtime=args.runtime, threads=cap_threads(args.threads),
                        per_client=args.per_client)
    service = Service.load(model, opts)  # a bad model: a user error, exit 2 (cli.main)
    app = create_app(service)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"lorefd serve: {service.bundle.path.name} ({service.bundle.manifest['detector']}, "
          f"threshold {service.threshold:.3f}) on http://{shown}:{args.port}/  "
          f"(API docs: /docs{'; token required' if token else ''})", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                    timeout_graceful_shutdown=5, http=header_deadline(opts.upload_idle_s))
    finally:
        service.close()
    return 0
