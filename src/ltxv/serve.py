"""`ltxv serve`: the model loaded once behind a small local HTTP server, so that each video costs its
generation alone (no process start, no loading): a page to type prompts into, and a JSON endpoint.

    GET  /          the page (prompt, seed, size, steps, guidance, a first-frame image; the video plays there)
    GET  /config    the model and its generation defaults (JSON)
    GET  /progress  {"busy", "step", "steps", "waiting"}: the video being made, and how many wait (JSON)
    POST /generate  a JSON request (`serve_request.REQUEST_KEYS`) -> the video (video/mp4; image/png for one
                    frame), its seed, generation time and notes in X-Ltxv-* headers

Every refusal is {"error": "..."}: 400 bad input (naming the key), 411 no length, 413 over MAX_BODY, 415 not
sent as application/json (which keeps other web pages' plain posts out), 421 a loopback server addressed by
another name (DNS rebinding), 503 busy (MAX_WAITING queued) or stopping. Requests are made one at a time
(one model); the request itself is `serve_request`'s. Reads top-down: the flags, the HTTP server and its
page, `run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import ipaddress
import json
import queue
import socket
import sys
import threading
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .generate_cli import COND_CRF
from .serve_request import (
    KEY_NAMES,
    MAX_BODY,
    MAX_PIXELS,
    SAMPLE_KEYS,
    Rendered,
    Request,
    parse_request,
    render,
)

if TYPE_CHECKING:  # torch stays out of `ltxv --help`
    from .pipeline import Pipeline

# -- flags ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .generate_cli import add_cond_crf_flag, add_model_flags, add_runtime_flags

    add_model_flags(p)  # --model, --text-encoder, --lora
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one, printed)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse requests for more than this width x height x frames (default: 1280x720x257)",
    )
    add_cond_crf_flag(p)
    add_runtime_flags(p)  # --offload, --t5-cpu, speed-ups, --vae-tiling, --device, --dtype
    p.set_defaults(handler=run)


# -- the server ----------------------------------------------------------------------------------------------

MAX_WAITING = 8  # requests queued behind the one being made; more get 503
READ_TIMEOUT = 60  # seconds a client may take to send its request


class Unavailable(Exception):
    """The server cannot take the request now (busy, or stopping): HTTP 503."""


class Server(ThreadingHTTPServer):
    """The HTTP server around one pipeline. `run()` serves HTTP on a thread of its own and renders the
    requests, one at a time, on the thread that calls it (the one that loaded the model): on another thread
    the bundled model's videos took 0.43-0.55 s instead of 0.32-0.35 s on this 2-core CPU (measured; a fresh
    thread per request or one persistent worker alike)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        pipe: Pipeline,
        model: str,
        base: dict[str, Any] | None = None,
        cond_crf: int = COND_CRF,
        max_pixels: int = MAX_PIXELS,
        quiet: bool = False,
    ) -> None:
        super().__init__(address, _Handler)
        self.pipe, self.model, self.base, self.quiet = pipe, model, base or {}, quiet
        self.cond_crf, self.max_pixels = cond_crf, max_pixels
        self.jobs: queue.Queue[tuple[Request, Future[Rendered]]] = queue.Queue(MAX_WAITING)
        self.stopped = threading.Event()  # set when run() returns: queued and later requests get 503
        self.working: dict[str, int] | None = None  # {"step", "steps"} of the video being made, else None

    def run(self) -> None:
        """Serve until `shutdown()` (from another thread) or Ctrl-C, rendering on this thread."""
        http = threading.Thread(target=self.serve_forever, name="ltxv-http", daemon=True)
        http.start()
        try:
            while http.is_alive():
                try:
                    request, future = self.jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                self.working = {"step": 0, "steps": 0}
                try:
                    made = render(
                        self.pipe, self.model, request, self.base, self.cond_crf, self.max_pixels, self._step
                    )
                except Exception as err:  # noqa: BLE001 - the request's thread reports it to its client
                    future.set_exception(err)
                except BaseException:  # Ctrl-C: this request's client hears why, then the server stops
                    future.set_exception(Unavailable("the server was stopped while making this video"))
                    raise
                else:
                    future.set_result(made)
                finally:
                    self.working = None
        finally:
            self.stopped.set()
            self.shutdown()
            while not self.jobs.empty():
                self.jobs.get_nowait()[1].set_exception(Unavailable("the server is stopping"))

    def _step(self, step: int, steps: int) -> None:
        self.working = {"step": step, "steps": steps}  # one assignment: readers see the old or the new

    def progress(self) -> dict[str, Any]:
        """GET /progress: {"busy": false} or {"busy": true, "step": i, "steps": n}, and how many wait."""
        working = self.working
        return {"busy": working is not None, **(working or {}), "waiting": self.jobs.qsize()}

    def render(self, request: Request) -> Rendered:
        """`request` made by `run()`'s thread; called from the request's thread, which waits for its turn.
        Unavailable when MAX_WAITING requests wait already, or the server stops first."""
        if self.stopped.is_set():
            raise Unavailable("the server is stopping")
        future: Future[Rendered] = Future()
        try:
            self.jobs.put_nowait((request, future))
        except queue.Full:
            raise Unavailable(f"busy: {MAX_WAITING} requests are waiting; try again shortly") from None
        while True:
            try:
                return future.result(timeout=0.5)
            except FutureTimeout:
                if self.stopped.is_set() and future.cancel():  # queued after run()'s last look
                    raise Unavailable("the server is stopping") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def defaults(self) -> dict[str, Any]:
        """The request keys' values when a request leaves them out (the model's generation.json)."""
        from .demo import sample_config
        from .generate_cli import with_model_defaults

        cfg = sample_config(self.model, self.base, KEY_NAMES)
        cfg = with_model_defaults(self.pipe, cfg, stg_blocks_given=False, stochastic=None)
        fields = dataclasses.asdict(cfg)
        return {key: fields[field] for key, field in SAMPLE_KEYS.items()}

    def host_allowed(self, host: str | None) -> bool:
        """A loopback server answers only requests addressed to a loopback name: a web page elsewhere
        cannot reach it through a name of its own that resolves to 127.0.0.1 (DNS rebinding)."""
        if host is None or not ipaddress.ip_address(self.server_address[0]).is_loopback:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]").lower() in ("localhost", "127.0.0.1", "::1")


def make_server(
    pipe: Pipeline,
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    base: dict[str, Any] | None = None,
    cond_crf: int = COND_CRF,
    max_pixels: int = MAX_PIXELS,
    quiet: bool = False,
) -> Server:
    """A Server bound to host:port (0: any free port; `server.url` says which); call `run()`.
    `model` is the path `pipe` was loaded from (its generation.json gives the defaults). ValueError when the
    address cannot be used."""
    check_port(port)
    try:
        return Server((host, port), pipe, model, base, cond_crf, max_pixels, quiet)
    except OSError as err:
        raise ValueError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port (0: any free one)"
        ) from None


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535 (0: any free port), got {port}")


def check_address(host: str, port: int) -> None:
    """ValueError naming --host or --port unless a server could listen there now (checked before loading)."""
    check_port(port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(
            f"--host {host!r} is not an address here ({err}); e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port (0: any free "
                "one), or another --host"
            ) from None


class _Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = READ_TIMEOUT

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "this server answers to localhost / 127.0.0.1 only")
        elif path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _page(self.server).encode(), "text/html; charset=utf-8")
        elif path == "/config":
            self._json(HTTPStatus.OK, {"model": self.server.model, "defaults": self.server.defaults()})
        elif path == "/progress":
            self._json(HTTPStatus.OK, self.server.progress())
        else:
            self._error(
                HTTPStatus.NOT_FOUND, f"no page {path!r}; GET /, /config or /progress, POST /generate"
            )

    def do_POST(self) -> None:  # noqa: N802
        request = self._read_request()
        if request is None:  # refused: the reply is sent
            return
        try:
            made = self.server.render(request)
        except (ValueError, FileNotFoundError) as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        except Unavailable as err:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
            return
        except Exception as err:  # a bug: the traceback on the server's stderr, the message to the client
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(err).__name__}: {err}")
            return
        if not self.server.quiet:
            prompt = request.prompt if len(request.prompt) <= 60 else request.prompt[:57] + "..."
            print(
                f"made {made.media_type} in {made.seconds:.2f} s, seed {made.seed}: {prompt!r}",
                file=sys.stderr,
            )
        headers = {
            "X-Ltxv-Seed": str(made.seed),
            "X-Ltxv-Seconds": f"{made.seconds:.3f}",
            "X-Ltxv-Notes": json.dumps(made.notes),  # ASCII (json escapes the rest)
        }
        self._send(HTTPStatus.OK, made.data, made.media_type, headers)

    def _read_request(self) -> Request | None:
        """The POST's Request, or None after replying why not (4xx)."""
        if self.path.split("?")[0] != "/generate":
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint {self.path!r}; POST /generate")
            return None
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "this server answers to localhost / 127.0.0.1 only")
            return None
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":  # also what keeps other web pages out: theirs would need a preflight
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the request as JSON with Content-Type: "
                        f"application/json (got {kind or 'none'!r})")  # fmt: skip
            return None
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the JSON body with a Content-Length")
            return None
        if int(length) > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request is {length} bytes; the limit is "
                        f"{MAX_BODY} (send smaller or fewer conditioning media)")  # fmt: skip
            return None
        try:
            return parse_request(json.loads(self.rfile.read(int(length))))
        except TimeoutError:
            self._error(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {READ_TIMEOUT} s")
        except json.JSONDecodeError as err:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({err})")
        except UnicodeDecodeError as err:
            self._error(
                HTTPStatus.BAD_REQUEST, f"the body is not UTF-8 text (byte {err.start}): send JSON as UTF-8"
            )
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "the body's JSON is nested too deeply")
        except ValueError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        return None

    def _error(self, status: HTTPStatus, message: str) -> None:
        if status not in (HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND):
            self.close_connection = True  # the body may be unread
        self._json(status, {"error": message})

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(
        self, status: HTTPStatus, data: bytes, media_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (closed the page): its loss
            self.close_connection = True
            self.log_message("%s", "the client closed the connection before the reply")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            print(f"{self.address_string()} {format % args}", file=sys.stderr)


def _page(server: Server) -> str:
    """assets/serve.html with the model's name and defaults filled in (its empty fields leave them)."""
    defaults = {k: v for k, v in server.defaults().items() if k in _PAGE_FIELDS}
    page = (Path(__file__).parent / "assets" / "serve.html").read_text()
    return page.replace("__DEFAULTS__", json.dumps(defaults)).replace(
        "__MODEL__", html.escape(Path(server.model).name)
    )


_PAGE_FIELDS = ("seed", "width", "height", "frames", "steps", "guidance")


# -- the run -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from .demo import sample_config
    from .devices import resolve_device
    from .generate_cli import check_cond_crf, check_lora, load_pipeline, resolve_model
    from .parallel import world_size
    from .speed import speed_from_args

    if world_size() > 1:
        raise ValueError("ltxv serve runs in one process; start it without torchrun")
    check_address(args.host, args.port)  # these, before minutes of loading
    check_cond_crf(args.cond_crf)
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    for spec in args.lora:
        check_lora(spec)
    model = resolve_model(args)
    base = {} if args.vae_tiling == "auto" else {"vae_tiling": args.vae_tiling == "on"}
    sample_config(model, base)  # a bad generation.json fails before the loading
    speed = speed_from_args(args)
    device = resolve_device(args.device)
    pipe = load_pipeline(args, device, speed)
    server = make_server(pipe, model, args.host, args.port, base, args.cond_crf, args.max_pixels)
    print(f"serving {model} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
