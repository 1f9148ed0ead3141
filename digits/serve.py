"""`python -m digits.serve`: a page to draw or drop digits on, and the JSON API behind it.

    python -m digits.serve --model logs/cnn/version_0/model.keras      # http://127.0.0.1:8000

The page (`/`) reads what you draw with mouse, pen or finger, or a photo you drop or pick: the
number, each digit's top three probabilities, and the 28x28 inputs the model saw. The API:

- `POST /api/predict`: an image as the raw request body or as a multipart file field; the answer
  is exactly the entry `digits.predict --json` prints for that image (the same code reads it:
  `digits.reading.images` finds the digits, `digits.reading.Reader` reads them), plus each digit's
  28x28 input as a PNG data URL when asked with `?inputs=1`.
- `GET /api/health`, `GET /api/model` (the model's path, format, size, test accuracy, classes).

Any model `digits.deploy.runtimes` loads is served: a `.keras` file or its SavedModel, ONNX or LiteRT
export (an int8 `.tflite` is the fast path). Bad requests get a 4xx JSON `{"error": ...}` and
the server goes on; it binds 127.0.0.1 unless told otherwise and stops cleanly on Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import sys

from digits import cli

# The largest request body read (a phone photo is 2-8 MB); larger ones get 413 unread.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-serve",
        description="Serve a model: a web page to draw or drop digits on, and a JSON API "
                    "(POST /api/predict answers what digits.predict --json prints).",
        epilog="Exit status: 0 after Ctrl-C or SIGTERM; 2 on bad input (a model that does not "
               "load, an address in use).",
    )
    cli.add_saved_model_argument(parser)
    cli.add_model_module_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; "
                             "--host 0.0.0.0 serves your network)")
    parser.add_argument("--port", type=cli.port_number, default=8000,
                        help="port (default: 8000; 0 picks a free one)")
    cli.add_min_probability_argument(parser)
    cli.add_tta_argument(parser)
    parser.add_argument("--workers", type=cli.worker_count, default=1, metavar="N",
                        help="processes answering requests, each with its own copy of the "
                             "model (default: 1; one per core serves the most requests)")
    parser.add_argument("--corrections", type=cli.non_empty, default=None, metavar="DIR",
                        help="let people correct a reading: the page (and POST "
                             "/api/corrections) saves a digit said to be a 7 as DIR/7/<hash>.png, "
                             "its 28x28 input; DIR is then a dataset (digits.train --init-from "
                             "MODEL --dataset DIR)")
    parser.add_argument("--max-corrections", type=cli.positive_int, default=10_000, metavar="N",
                        help="digits DIR may hold before corrections are refused (default: "
                             "10000)")
    parser.add_argument("--max-request-mb", type=cli.positive_int,
                        default=MAX_REQUEST_BYTES // (1024 * 1024), metavar="MB",
                        help="largest request body accepted (default: "
                             f"{MAX_REQUEST_BYTES // (1024 * 1024)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 after a clean stop, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.import_model_modules(args.model_module)
    import socket

    from digits.errors import ConfigError

    # The socket first: a port in use is said at once, before a model is loaded.
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it every keep-alive answer waited 40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # from here on connections wait in line until the app is up
    except (OSError, OverflowError) as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    from digits.deploy.service import ENVIRONMENT, create_app
    from digits.reading import Reader

    if args.corrections is not None:
        import os

        if os.path.exists(args.corrections) and not os.path.isdir(args.corrections):
            raise ConfigError(f"--corrections {args.corrections}: not a directory")

    # Loaded here even with workers: a model that does not load is one error line, at once.
    reader = Reader.load(args.model, min_probability=args.min_probability, tta=args.tta)
    settings = {"model": args.model, "model_modules": args.model_module,
                "min_probability": args.min_probability, "tta": args.tta,
                "max_request_bytes": args.max_request_mb * 1024 * 1024,
                "corrections": args.corrections, "max_corrections": args.max_corrections}
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(f"serving {args.model} ({reader.runtime.format}{workers}) at http://{shown}:{port}/  "
          "(Ctrl-C stops)", flush=True)
    import uvicorn

    options = dict(log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    if args.workers > 1:
        # Each worker process builds its app from these settings (uvicorn spawns them).
        import json
        import os

        from uvicorn.supervisors import Multiprocess

        del reader
        os.environ[ENVIRONMENT] = json.dumps(settings)
        config = uvicorn.Config("digits.serve:app_from_environment", factory=True,
                                workers=args.workers, **options)
        import inspect

        # uvicorn's supervisor: older releases take the worker's target, newer make it.
        extra = {"target": uvicorn.Server(config).run} \
            if "target" in inspect.signature(Multiprocess).parameters else {}
        Multiprocess(config, sockets=[sock], **extra).run()
        print("stopped", file=sys.stderr)
        return 0
    app = create_app(reader, max_request_bytes=settings["max_request_bytes"],
                     corrections=settings["corrections"],
                     max_corrections=settings["max_corrections"])
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    # uvicorn handles Ctrl-C and SIGTERM while it runs (finishing the requests in hand), then
    # raises the signal again for the handlers it found: these note it, so the command ends
    # with its own status 0 instead of dying of the signal after a clean stop.
    import signal

    stops = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, frame: stops.append(number))
    server.run(sockets=[sock])
    print("stopped", file=sys.stderr)
    return 0


def app_from_environment():
    """The app of one `digits.serve --workers N` process, built from `ENVIRONMENT`'s settings.

    Each worker runs its inference on one thread: N workers share the machine's cores.
    """
    import json
    import os

    from digits.deploy.service import ENVIRONMENT, create_app
    from digits.reading import Reader

    cli.quiet_tensorflow()
    settings = json.loads(os.environ[ENVIRONMENT])
    cli.import_model_modules(settings.get("model_modules", []))
    reader = Reader.load(settings["model"], threads=1, tta=settings.get("tta", False),
                         min_probability=settings["min_probability"])
    return create_app(reader, max_request_bytes=settings["max_request_bytes"],
                      corrections=settings.get("corrections"),
                      max_corrections=settings["max_corrections"])


if __name__ == "__main__":
    raise SystemExit(main())
