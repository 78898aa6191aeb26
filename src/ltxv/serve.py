"""`ltxv serve`: the model loaded once behind a small local HTTP server, so that each video costs its
generation alone (no process start, no loading): a page to type prompts into, and a JSON endpoint.

    GET  /          the page (prompt, seed, size, steps, guidance, a first-frame image; the video plays there)
    GET  /config    the model and its generation defaults (JSON)
    POST /generate  a JSON request (`REQUEST_KEYS`) -> the video (video/mp4; image/png for one frame), its
                    seed, generation time and notes in X-Ltxv-* headers; bad input -> 400 {"error": ...}

Requests are made one at a time (one model). Reads top-down: the flags, the request (JSON -> SampleConfig
fields and conditioning media), rendering one request, the HTTP server and its page, `run`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import math
import queue
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo import GENERATION_FLAGS

if TYPE_CHECKING:  # torch stays out of `ltxv --help`
    from .pipeline import Pipeline

# -- flags ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .generate_cli import _add_runtime_flags

    p.add_argument(
        "--model",
        help="checkpoint: official .safetensors, diffusers folder, ltxv file or model folder "
        "(default: the bundled demo model)",
    )
    p.add_argument(
        "--text-encoder", help="T5 folder (text_encoder/ + tokenizer/, or both in one folder) or hub id"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one, printed)")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="LoRA file merged into the transformer at start; repeatable",
    )
    p.add_argument("--cond-crf", type=int, default=29, help="conditioning media get the official blur and "
                   "H.264 round trip at this crf, 1..51 (0 = use them unchanged)")  # fmt: skip
    _add_runtime_flags(p)  # --offload, --t5-cpu, speed-ups, --vae-tiling, --device, --dtype
    p.set_defaults(handler=run)


# -- the request ---------------------------------------------------------------------------------------------

# request key -> SampleConfig field; the keys are `ltxv generate`'s flags without "--", "-" as "_"
SAMPLE_KEYS = GENERATION_FLAGS | {
    "seed": "seed",
    "timesteps": "timesteps",
    "stg_blocks": "stg_blocks",
    "stochastic": "stochastic",
}
KEY_NAMES = {field: f'"{key}"' for key, field in SAMPLE_KEYS.items()}  # for `sample_config`'s messages
MEDIA_KEYS = ("image", "image_strength", "conditions")
REQUEST_KEYS = ("prompt", *SAMPLE_KEYS, *MEDIA_KEYS)
MAX_BODY = 64 * 1024 * 1024  # bytes: a request's media are base64 images or short clips
_SUFFIXES = {  # data-URL media types -> the file suffix `read_media` reads them by
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
}


@dataclasses.dataclass
class Media:
    """A conditioning image or clip of a request: its file's bytes, placed at `frame` (< 0: from the end)."""

    data: bytes
    suffix: str  # "" when unknown: read as an image, else as a video
    frame: int
    strength: float
    name: str  # in messages: "image", "conditions[1]"


@dataclasses.dataclass
class Request:
    prompt: str
    given: dict[str, Any]  # SampleConfig fields the request sets (the rest: the model's generation.json)
    media: list[Media]


def parse_request(body: dict[str, Any]) -> Request:
    """A decoded JSON request -> Request, or a ValueError naming the key, the value and what to send."""
    from .config import SampleConfig, coerce_value

    if not isinstance(body, dict):
        raise ValueError(
            f'the request must be a JSON object such as {{"prompt": "a red circle"}}, got {body!r}'
        )
    unknown = sorted(set(body) - set(REQUEST_KEYS))
    if unknown:
        raise ValueError(f"unknown request keys {unknown}; known keys: {sorted(REQUEST_KEYS)}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f'"prompt" must be a string (the video\'s description), got {prompt!r}')
    given = {}
    for key, field in SAMPLE_KEYS.items():
        if key in body and body[key] is not None:  # null: the model's default, as an absent key
            given[field] = coerce_value(SampleConfig, field, body[key], f'"{key}"')
    media = []
    if body.get("image") is not None:
        strength = _number(body.get("image_strength", 1.0), '"image_strength"')
        media.append(_media(body["image"], 0, strength, "image"))
    elif body.get("image_strength") is not None:
        raise ValueError('"image_strength" only applies with "image": add "image" or drop "image_strength"')
    conditions = body.get("conditions") or []
    if not isinstance(conditions, list):
        raise ValueError(
            f'"conditions" must be a list of {{"media", "frame", "strength"}} objects, got {conditions!r}'
        )
    for i, item in enumerate(conditions):
        name = f"conditions[{i}]"
        if not isinstance(item, dict) or "media" not in item or "frame" not in item:
            raise ValueError(f'{name} must be an object with "media" (base64 or a data URL) and "frame"')
        extra = sorted(set(item) - {"media", "frame", "strength"})
        if extra:
            raise ValueError(f'{name}: unknown keys {extra}; known keys: ["frame", "media", "strength"]')
        frame = item["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f'{name}: "frame" must be an integer (-1 is the last frame), got {frame!r}')
        strength = _number(item.get("strength", 1.0), f'{name}: "strength"')
        media.append(_media(item["media"], frame, strength, name))
    return Request(prompt, given, media)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def _media(value: Any, frame: int, strength: float, name: str) -> Media:
    """Base64 text or a data URL ("data:image/png;base64,...") -> Media."""
    if not isinstance(value, str):
        raise ValueError(
            f"{name}: expected an image or clip as base64 text or a data URL, got {type(value).__name__}"
        )
    suffix = ""
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        media_type = head[5:].split(";")[0].lower()
        if ";base64" not in head:
            raise ValueError(f"{name}: a data URL must be base64 (data:{media_type};base64,...)")
        if media_type not in _SUFFIXES:
            raise ValueError(
                f"{name}: media type {media_type!r} is not read; send one of {sorted(_SUFFIXES)}"
            )
        suffix = _SUFFIXES[media_type]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not valid base64") from None
    if not data:
        raise ValueError(f"{name}: empty")
    return Media(data, suffix, frame, strength, name)


# -- one request ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Rendered:
    data: bytes  # the file: H.264 mp4, or PNG for one frame
    media_type: str  # "video/mp4" or "image/png"
    seed: int
    seconds: float  # generating and encoding
    notes: list[str]


def render(
    pipe: Pipeline,
    model: str,
    request: Request,
    base: dict[str, Any] | None = None,
    cond_crf: int = 29,
) -> Rendered:
    """One request as `ltxv generate` makes it: `request.given` > `base` (the server's own settings) >
    `model`'s generation.json; conditioning media fitted as --image/--condition are. ValueError for bad
    input."""
    from .demo import sample_config
    from .generate_cli import fit_conditions, prompt_notes, with_model_defaults
    from .media import padded_size, write_video

    begun = time.perf_counter()
    given = (base or {}) | request.given
    cfg = sample_config(model, given, KEY_NAMES)
    size = padded_size(cfg.height, cfg.width, cfg.num_frames)
    if not 0 <= cond_crf <= 51:
        raise ValueError(f"cond_crf must be in 0..51 (0 = no H.264 round trip), got {cond_crf}")
    with tempfile.TemporaryDirectory(prefix="ltxv-serve-") as tmp:
        items = []
        for media in request.media:
            path = Path(tmp) / f"{media.name}{media.suffix}"  # so that a message names the request's key
            path.write_bytes(media.data)
            items.append((str(path), media.frame, media.strength, media.name))
        try:
            conditions = fit_conditions(items, cfg, size, cond_crf)
        except (ValueError, OSError) as err:  # an unreadable upload: name it, not the temporary file
            raise ValueError(str(err).replace(str(Path(tmp)) + "/", "")) from None
        cfg = with_model_defaults(
            pipe, cfg, stg_blocks_given="stg_blocks" in given, stochastic=cfg.stochastic
        )
        notes = prompt_notes(pipe, [request.prompt], cfg)
        if not request.prompt.strip():
            notes.append("note: the prompt is empty: generating unconditionally")
        cfg = dataclasses.replace(cfg, seed=pipe.pick_seed(cfg))
        result = pipe.generate(request.prompt, cfg, conditions=conditions)
        out = write_video(Path(tmp) / "out.mp4", result.video[0], cfg.frame_rate)  # one frame: out.png
        data = out.read_bytes()
    media_type = "image/png" if out.suffix == ".png" else "video/mp4"
    return Rendered(data, media_type, cfg.seed, time.perf_counter() - begun, notes)


# -- the server ----------------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    """The HTTP server around one pipeline. `run()` serves HTTP on a thread of its own and renders the
    requests, one at a time, on the thread that calls it (the one that loaded the model): on another thread
    the bundled model's videos took 0.47-0.55 s instead of 0.33-0.34 s on this 2-core CPU (measured; a fresh
    thread per request or one persistent worker alike)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        pipe: Pipeline,
        model: str,
        base: dict[str, Any] | None = None,
        cond_crf: int = 29,
        quiet: bool = False,
    ) -> None:
        super().__init__(address, _Handler)
        self.pipe, self.model, self.base, self.cond_crf, self.quiet = pipe, model, base or {}, cond_crf, quiet
        self.jobs: queue.Queue[tuple[Request, Future[Rendered]]] = queue.Queue()

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
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(render(self.pipe, self.model, request, self.base, self.cond_crf))
                    except Exception as err:  # noqa: BLE001 - the handler reports it to its client
                        future.set_exception(err)
        finally:
            self.shutdown()
            while not self.jobs.empty():  # requests that came while stopping
                self.jobs.get_nowait()[1].set_exception(RuntimeError("the server is stopping"))

    def render(self, request: Request) -> Rendered:
        """`request` rendered by `run()`'s thread (called from the request's thread; waits for its turn)."""
        future: Future[Rendered] = Future()
        self.jobs.put((request, future))
        return future.result()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def defaults(self) -> dict[str, Any]:
        """The request keys' values when a request leaves them out (the model's generation.json)."""
        from .demo import sample_config
        from .generate_cli import with_model_defaults

        cfg = sample_config(self.model, self.base, KEY_NAMES)
        cfg = with_model_defaults(self.pipe, cfg, stg_blocks_given=False, stochastic=cfg.stochastic)
        fields = dataclasses.asdict(cfg)
        return {key: fields[field] for key, field in SAMPLE_KEYS.items()}


def make_server(
    pipe: Pipeline,
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    base: dict[str, Any] | None = None,
    cond_crf: int = 29,
    quiet: bool = False,
) -> Server:
    """A Server bound to host:port (0: any free port; `server.url` says which); call `run()`.
    `model` is the path `pipe` was loaded from (its generation.json gives the defaults). ValueError when the
    address cannot be used."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535 (0: any free port), got {port}")
    try:
        return Server((host, port), pipe, model, base, cond_crf, quiet)
    except OSError as err:
        raise ValueError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port (0: any free one)"
        ) from None


class _Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _page(self.server).encode(), "text/html; charset=utf-8")
        elif path == "/config":
            self._json(HTTPStatus.OK, {"model": self.server.model, "defaults": self.server.defaults()})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path!r}; GET / or /config, POST /generate"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?")[0] != "/generate":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path!r}; POST /generate"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the JSON body with a Content-Length"})
            return
        if int(length) > MAX_BODY:
            self.close_connection = True  # the unread body is not read
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"the request is {length} bytes; the "
                       f"limit is {MAX_BODY} (send smaller or fewer conditioning media)"})  # fmt: skip
            return
        try:
            body = json.loads(self.rfile.read(int(length)))
            request = parse_request(body)
            made = self.server.render(request)
        except json.JSONDecodeError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"the body is not JSON ({err})"})
            return
        except (ValueError, FileNotFoundError) as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        except Exception as err:  # a bug: the traceback on the server's stderr, the message to the client
            traceback.print_exc()
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(err).__name__}: {err}"}
            )
            return
        if not self.server.quiet:
            print(
                f"made {made.media_type} in {made.seconds:.2f} s, seed {made.seed}: {request.prompt!r}",
                file=sys.stderr,
            )
        headers = {
            "X-Ltxv-Seed": str(made.seed),
            "X-Ltxv-Seconds": f"{made.seconds:.3f}",
            "X-Ltxv-Notes": json.dumps(made.notes),  # ASCII (json escapes the rest)
        }
        self._send(HTTPStatus.OK, made.data, made.media_type, headers)

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
    """The page: a form whose empty fields leave the model's defaults (shown as placeholders)."""
    defaults = {k: v for k, v in server.defaults().items() if k in _PAGE_FIELDS}
    return _PAGE.replace("__DEFAULTS__", json.dumps(defaults)).replace(
        "__MODEL__", _html(Path(server.model).name)
    )


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_PAGE_FIELDS = ("seed", "width", "height", "frames", "steps", "guidance")
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ltxv</title>
<style>
body { font: 15px system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
input[type=text] { width: 100%; box-sizing: border-box; padding: .4rem; font-size: 1rem; }
.row { display: flex; gap: .6rem; flex-wrap: wrap; margin: .6rem 0; }
.row label { display: flex; flex-direction: column; font-size: .85rem; }
.row input { width: 6rem; }
#out video, #out img { max-width: 100%; image-rendering: pixelated; min-width: 256px; }
#status { color: #555; margin: .5rem 0; white-space: pre-wrap; }
#status.error { color: #b00; }
</style></head>
<body>
<h1>ltxv <small style="font-weight:normal;color:#777">__MODEL__</small></h1>
<form id="form">
<input type="text" id="prompt" value="a red circle moving right on a black background" autofocus>
<div class="row" id="fields"></div>
<div class="row"><label>first frame (image-to-video, optional)<input type="file" id="image" accept="image/*"
 style="width:auto"></label></div>
<button type="submit" id="go">Generate</button>
</form>
<div id="status"></div>
<div id="out"></div>
<script>
const defaults = __DEFAULTS__;
const fields = document.getElementById("fields");
for (const [key, value] of Object.entries(defaults)) {
  const label = document.createElement("label");
  label.textContent = key;
  const input = document.createElement("input");
  input.id = key; input.type = "number"; input.step = "any";
  input.placeholder = value === null ? "random" : value;
  label.appendChild(input); fields.appendChild(label);
}
function dataUrl(file) {
  return new Promise((ok, fail) => {
    const reader = new FileReader();
    reader.onload = () => ok(reader.result); reader.onerror = fail; reader.readAsDataURL(file);
  });
}
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status"), go = document.getElementById("go");
  const body = { prompt: document.getElementById("prompt").value };
  for (const key of Object.keys(defaults)) {
    const text = document.getElementById(key).value;
    if (text !== "") body[key] = Number(text);
  }
  const file = document.getElementById("image").files[0];
  if (file) body.image = await dataUrl(file);
  status.className = ""; status.textContent = "generating..."; go.disabled = true;
  const begun = performance.now();
  try {
    const reply = await fetch("/generate", { method: "POST", body: JSON.stringify(body) });
    if (!reply.ok) {
      status.className = "error"; status.textContent = (await reply.json()).error; return;
    }
    const blob = await reply.blob(), url = URL.createObjectURL(blob);
    const out = document.getElementById("out");
    out.innerHTML = blob.type === "image/png" ? `<img src="${url}">`
      : `<video src="${url}" autoplay loop controls muted playsinline></video>`;
    const seed = reply.headers.get("X-Ltxv-Seed");
    const notes = JSON.parse(reply.headers.get("X-Ltxv-Notes") || "[]");
    status.textContent = `seed ${seed}: ${reply.headers.get("X-Ltxv-Seconds")} s on the server, `
      + `${((performance.now() - begun) / 1000).toFixed(2)} s here`
      + (notes.length ? "\\n" + notes.join("\\n") : "");
    const link = document.createElement("a");
    link.href = url; link.download = blob.type === "image/png" ? "ltxv.png" : "ltxv.mp4";
    link.textContent = "download"; status.append("  ", link);
  } catch (err) {
    status.className = "error"; status.textContent = String(err);
  } finally { go.disabled = false; }
});
</script>
</body></html>
"""


# -- the run -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from .demo import demo_model, sample_config
    from .devices import resolve_device
    from .generate_cli import _parse_lora, _pipeline
    from .parallel import world_size
    from .speed import speed_from_args

    if world_size() > 1:
        raise ValueError("ltxv serve runs in one process; start it without torchrun")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if not 0 <= args.cond_crf <= 51:
        raise ValueError(f"--cond-crf must be in 0..51 (0 = no H.264 round trip), got {args.cond_crf}")
    for spec in args.lora:
        _parse_lora(spec)
    if args.model is None:
        args.model = str(demo_model())
    base = {} if args.vae_tiling == "auto" else {"vae_tiling": args.vae_tiling == "on"}
    sample_config(args.model, base)  # a bad generation.json fails before the loading
    speed = speed_from_args(args)
    device = resolve_device(args.device)
    pipe = _pipeline(args, device, speed)
    server = make_server(pipe, args.model, args.host, args.port, base, args.cond_crf)
    print(f"serving {args.model} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
