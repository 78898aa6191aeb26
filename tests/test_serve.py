"""`ltxv serve`: a tiny model folder behind the server in a thread; each request's video is the one the
pipeline makes with the same settings (text-to-video, image-to-video, one frame); bad requests get 400 and
a message naming the key; the command starts, answers and stops on Ctrl-C, refuses a bad port with exit 2."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
import torch
from conftest import tiny_random_models
from tiny_t5 import make_tiny_t5

from ltxv.generate_cli import fit_conditions, with_model_defaults
from ltxv.media import padded_size, read_image, write_video
from ltxv.pipeline import Pipeline
from ltxv.serve import make_server
from ltxv.serve_request import MAX_BODY, parse_request
from ltxv.weights import save_checkpoint

GENERATION = {"width": 64, "height": 64, "num_frames": 9, "frame_rate": 12, "steps": 2}  # SampleConfig fields


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder: model.safetensors, text_encoder/ + tokenizer/, generation.json, and a PNG."""
    root = tmp_path_factory.mktemp("served")
    spec, vae, dit = tiny_random_models()
    save_checkpoint(root / "model.safetensors", spec, vae, dit, "ltxv")
    make_tiny_t5(root, "root")
    (root / "generation.json").write_text(json.dumps(GENERATION))
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 80x48 PNG: fitted to the 64x64 request by the resize and centre crop of --image."""
    return write_video(tmp_path_factory.mktemp("media") / "image.png", torch.rand(1, 3, 1, 48, 80), 1)


@pytest.fixture(scope="module")
def served(folder):
    """(server, pipe, made): `made` records every GenerationResult the server's pipeline returns, each with
    `.interval`, the (start, end) of its generation."""
    pipe = Pipeline.from_pretrained(folder)
    made, generate = [], pipe.generate

    def recording(*args, **kwargs):
        begun = time.perf_counter()
        result = generate(*args, **kwargs)
        result.interval = (begun, time.perf_counter())
        made.append(result)
        return result

    pipe.generate = recording
    server = make_server(pipe, str(folder), port=0, quiet=True)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server, pipe, made
    server.shutdown()
    server.server_close()


def call(server, method: str, path: str, body: object = None, raw: bytes | None = None):
    """(status, headers, body bytes) of one request."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=120)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    result = reply.status, dict(reply.getheaders()), reply.read()
    conn.close()
    return result


def check_made(served, data: bytes, tmp_path, prompt: str, conditions=(), **fields) -> None:
    """The server's last video is the one `Pipeline.generate` makes with these settings (the model's defaults
    for the rest), exactly, and the file it sent holds that many frames of that size. (The file's pixels are
    not compared: these noise-like random-model videos lose ~20 dB to H.264 and 4:2:0 chroma, and libx264
    does not always make the same file from them twice; the one-frame PNG test compares exactly.)"""
    _, pipe, made = served
    cfg = dataclasses.replace(pipe.default_config(), **fields)
    got = made[-1].video[0]
    assert torch.equal(got, pipe.generate(prompt, cfg, conditions=list(conditions)).video[0])
    assert decoded(data, tmp_path).shape == (*got.shape[1:], 3)


def decoded(data: bytes, tmp_path) -> np.ndarray:
    """An mp4's frames, (F, H, W, 3) uint8."""
    path = tmp_path / "decoded.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_text_to_video_is_the_pipelines_video(served, tmp_path):
    server = served[0]
    status, headers, data = call(server, "POST", "/generate", {"prompt": "a red circle", "seed": 5})
    assert status == 200 and headers["Content-Type"] == "video/mp4", data[:200]
    assert headers["X-Ltxv-Seed"] == "5" and float(headers["X-Ltxv-Seconds"]) > 0
    assert decoded(data, tmp_path).shape == (9, 64, 64, 3)  # generation.json's size and frames
    check_made(served, data, tmp_path, "a red circle", seed=5)


def test_request_settings_override_the_models(served, tmp_path):
    server, _, made = served
    body = {"prompt": "a blue square", "seed": 1, "width": 96, "frames": 17, "guidance": 2, "steps": 3}
    body["guidance_until"] = 0.9
    status, _, data = call(server, "POST", "/generate", body)
    assert status == 200, data[:200]
    assert decoded(data, tmp_path).shape == (17, 64, 96, 3)
    settings = {"width": 96, "num_frames": 17, "guidance": 2.0, "guidance_until": 0.9, "steps": 3}
    check_made(served, data, tmp_path, "a blue square", seed=1, **settings)
    status, headers, data = call(server, "POST", "/generate", {"prompt": "a dot", "frames": 1, "seed": 2})
    assert status == 200 and headers["Content-Type"] == "image/png"
    (tmp_path / "frame.png").write_bytes(data)  # lossless: exactly the frame made
    sent = read_image(tmp_path / "frame.png")[0, :, 0]  # (3, H, W) in [-1, 1]
    assert torch.equal(((sent + 1) * 127.5).round(), (made[-1].video[0, :, 0] * 255).round())


def test_no_seed_draws_one_that_reproduces_the_video(served):
    server, _, made = served
    status, headers, _ = call(server, "POST", "/generate", {"prompt": "a red circle"})
    assert status == 200
    first = made[-1].video
    status, _, _ = call(
        server, "POST", "/generate", {"prompt": "a red circle", "seed": int(headers["X-Ltxv-Seed"])}
    )
    assert status == 200 and torch.equal(made[-1].video, first)


def test_image_to_video_is_the_pipelines_video(served, image, tmp_path):
    server, pipe, made = served
    body = {"prompt": "the circle moves", "seed": 3, "image": data_url(image)}
    status, _, data = call(server, "POST", "/generate", body)
    assert status == 200, data[:200]
    with_image = made[-1].video
    conditions, _ = fit_conditions(
        [(str(image), 0, 1.0, "image")], pipe.default_config(), padded_size(64, 64, 9), 29
    )
    check_made(served, data, tmp_path, "the circle moves", conditions, seed=3)
    call(server, "POST", "/generate", {"prompt": "the circle moves", "seed": 3})
    assert not torch.allclose(made[-1].video, with_image, atol=0.05)  # the image was used


def test_requests_at_once_are_made_one_after_the_other(served):
    server, pipe, made = served
    replies = {}

    def post(seed: int) -> None:
        replies[seed] = call(
            server, "POST", "/generate", {"prompt": "a red circle", "seed": seed, "steps": 1}
        )

    threads = [threading.Thread(target=post, args=(seed,)) for seed in (11, 12, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replies) == [11, 12, 13] and all(r[0] == 200 for r in replies.values())
    intervals = sorted(result.interval for result in made[-3:])
    assert all(
        end <= start for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False)
    )  # one at a time
    by_seed = {result.seed: result.video for result in made[-3:]}
    for seed in (11, 12, 13):
        cfg = dataclasses.replace(pipe.default_config(), seed=seed, steps=1)
        assert torch.equal(by_seed[seed], pipe.generate("a red circle", cfg).video)


def test_notes_come_back_in_a_header(served):
    server = served[0]
    body = {"prompt": "a red circle moving right on a black background", "max_tokens": 3, "seed": 0}
    status, headers, _ = call(server, "POST", "/generate", body)
    assert status == 200
    assert any("is read as its first 3" in note for note in json.loads(headers["X-Ltxv-Notes"]))
    status, headers, _ = call(server, "POST", "/generate", {"prompt": " ", "seed": 0})
    assert status == 200 and "generating that segment unconditionally" in headers["X-Ltxv-Notes"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "the body is not JSON"),
        ([], "must be a JSON object"),
        ({"seed": 1}, '"prompt" must be a string'),
        ({"prompt": 3}, '"prompt" must be a string'),
        ({"prompt": "x", "stepz": 1}, "unknown request keys ['stepz']; known keys:"),
        ({"prompt": "x", "frames": "ten"}, "\"frames\": expected int, got 'ten'"),
        ({"prompt": "x", "frames": 0}, '"frames" must be >= 1'),
        ({"prompt": "x", "guidance": -1}, '"guidance" must be a finite number in [0, 100], got -1.0'),
        ({"prompt": "x", "guidance_until": 1.5}, '"guidance_until" must be a finite number in [0, 1]'),
        ({"prompt": "x", "conditions": {}}, '"conditions" must be a list'),
        ({"prompt": "x", "width": 2048, "height": 2048, "frames": 1025}, "over this server's limit of"),
        ({"prompt": "x", "steps": 1e30}, '"steps" 1000000000000000019884624838656 is too large (max 1000)'),
        ({"prompt": "x", "seed": True}, '"seed": expected int, got True'),
        ({"prompt": "x", "stg_blocks": [9]}, "STG blocks [9] do not exist"),
        ({"prompt": "x", "image": "abc"}, "image: not valid base64"),
        (
            {"prompt": "x", "image": base64.b64encode(b"not a picture").decode()},
            "cannot read 'image': neither a readable image nor video",
        ),
        ({"prompt": "x", "image": "data:text/plain;base64,YQ=="}, "media type 'text/plain' is not read"),
        ({"prompt": "x", "image_strength": 0.5}, '"image_strength" only applies with "image"'),
        ({"prompt": "x", "conditions": "a.png"}, '"conditions" must be a list'),
        ({"prompt": "x", "conditions": [{"frame": 0}]}, 'conditions[0] must be an object with "media"'),
        ({"prompt": "x", "conditions": [{"media": "YQ==", "frame": "0"}]}, '"frame" must be an integer'),
        ({"prompt": "x", "conditions": [{"media": "YQ==", "frame": 0, "at": 1}]}, "unknown keys ['at']"),
        ({"prompt": "x", "conditions": [{"media": "YQ==", "frame": 0, "strength": 2}]}, "in (0, 1]"),
    ],
)
def test_bad_requests_get_400_naming_the_key(served, body, message):
    server = served[0]
    raw = body if isinstance(body, bytes) else None
    status, headers, data = call(server, "POST", "/generate", None if raw else body, raw)
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert message in json.loads(data)["error"]


def test_a_condition_past_the_end_is_named(served, image):
    server = served[0]
    media = data_url(image)
    body = {"prompt": "x", "conditions": [{"media": media, "frame": 0}, {"media": media, "frame": 40}]}
    status, _, data = call(server, "POST", "/generate", body)
    assert status == 400
    assert "conditions[1]: the video has frames 0..8 (-1 is the last)" in json.loads(data)["error"]


def test_null_and_empty_values_mean_the_models_default(served):
    request = parse_request(
        {"prompt": "x", "image_strength": None, "stg_blocks": [], "seed": None, "steps": 3}
    )
    assert request.given == {"steps": 3} and request.media == []
    assert parse_request({"prompt": "x", "stochastic": False}).given == {"stochastic": False}
    pipe = served[1]
    pipe.generation["stochastic"] = True  # a model whose default is stochastic sampling
    try:
        cfg = pipe.default_config()
        assert with_model_defaults(pipe, cfg, stg_blocks_given=False, stochastic=False).stochastic is False
        assert with_model_defaults(pipe, cfg, stg_blocks_given=False, stochastic=None).stochastic is True
    finally:
        del pipe.generation["stochastic"]


def test_media_notes_and_sizes(served, tmp_path):
    """A 12-frame clip at frame 0 of a 17-frame video: its first 9 frames (8k+1), said in a note; an image
    wider than 8192 pixels: refused before its pixels are decoded."""
    server = served[0]
    clip = write_video(tmp_path / "clip.mp4", torch.rand(3, 12, 32, 32), 12).read_bytes()
    media = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    conditions = [{"media": media, "frame": 0, "strength": 0.5}]
    body = {"prompt": "x", "seed": 0, "frames": 17, "conditions": conditions}
    status, headers, data = call(server, "POST", "/generate", body)
    assert status == 200, data[:300]
    assert "conditions[0]: using its first 9 of 12 frames" in headers["X-Ltxv-Notes"]
    wide = write_video(tmp_path / "wide.png", torch.rand(3, 1, 2, 9000), 1)
    status, _, data = call(server, "POST", "/generate", {"prompt": "x", "image": data_url(wide)})
    assert status == 400 and "9000x2 pixels; at most 8192 a side" in json.loads(data)["error"]


def test_page_config_and_unknown_paths(served):
    server = served[0]
    status, headers, page = call(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<form id="form">' in page and b'"frames": 9' in page  # the model's defaults as placeholders
    status, _, data = call(server, "GET", "/config")
    config = json.loads(data)
    assert status == 200 and config["defaults"]["frames"] == 9 and config["defaults"]["width"] == 64
    assert config["defaults"]["stg_blocks"] == [1]  # the tiny 2-block transformer's last block, as generate's
    assert call(server, "GET", "/nothing")[0] == 404
    assert call(server, "POST", "/other", {"prompt": "x"})[0] == 404


def test_a_body_over_the_limit_is_refused_unread(served):
    server = served[0]
    with socket.create_connection(server.server_address[:2], timeout=30) as s:
        reply = raw_reply(s, post_head(MAX_BODY + 1))
    assert reply.startswith("HTTP/1.0 413") and "the limit is" in reply


def post_head(length: int) -> bytes:
    head = f"POST /generate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    return head.encode()


def raw_reply(s: socket.socket, data: bytes) -> str:
    """Send `data` on `s` and read the reply until the server closes the connection."""
    s.sendall(data)
    chunks = []
    while chunk := s.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Content-Type": "text/plain"}, b"{}", 415, "Content-Type: application/json"),
        ({"Content-Type": "application/json", "Content-Length": "\u00b2"}, b"", 411, "Content-Length"),
        ({"Content-Type": "application/json"}, b"[" * 200_000, 400, "nested too deeply"),
        ({"Content-Type": "application/json", "Host": "evil.example"}, b"{}", 421, "localhost"),
    ],
)
def test_requests_that_cannot_be_read_are_refused(served, headers, body, status, message):
    """Other web pages (text/plain posts, DNS-rebound names), broken lengths, JSON bombs: refused, with a
    reply."""
    server = served[0]
    lines = [f"{name}: {value}" for name, value in headers.items()]
    if "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(server.server_address[:2], timeout=30) as s:
        reply = raw_reply(
            s, ("POST /generate HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        )
    assert reply.startswith(f"HTTP/1.0 {status}") and message in reply


def test_a_request_during_shutdown_gets_503_not_a_hang(served):
    """Half a request, the server stopped, then the rest: the reply says so (it used to wait forever)."""
    _, pipe, _ = served
    server = make_server(pipe, str(served[0].model), port=0, quiet=True)
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    body = json.dumps({"prompt": "a red circle", "seed": 1}).encode()
    with socket.create_connection(server.server_address[:2], timeout=30) as s:
        s.sendall(post_head(len(body)) + body[:10])
        time.sleep(0.3)
        server.shutdown()
        runner.join(timeout=30)
        assert not runner.is_alive()
        reply = raw_reply(s, body[10:])
    server.server_close()
    assert reply.startswith("HTTP/1.0 503") and "stopping" in reply


def test_the_command_serves_and_stops_on_ctrl_c(folder):
    # A job started in the background (`pytest &`) ignores SIGINT and a child inherits an ignored signal, so
    # the server would too (Python installs its Ctrl-C handler only where SIGINT is not ignored at start-up).
    # A handler is reset to the default action in the child instead: hold one while it starts (no
    # preexec_fn: with threads about, a forked child can deadlock before it execs).
    held = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ltxv", "serve", "--model", str(folder), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, held)
    try:
        assert select.select([proc.stdout], [], [], 120)[0], "no 'serving' line within 120 s"
        line = proc.stdout.readline()
        assert line.startswith(f"serving {folder} at http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/config")
        assert json.loads(conn.getresponse().read())["defaults"]["frames"] == 9
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()


def test_the_command_refuses_a_bad_or_busy_port(folder):
    def serve(port: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ltxv", "serve", "--model", str(folder), "--port", port],
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = serve("70000")
    assert r.returncode == 2 and "--port must be in 0..65535" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "ltxv", "serve", "--model", str(folder), "--port", "0", "--host", "999.1.1.1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--host '999.1.1.1' is not an address here" in r.stderr, r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = serve(str(port))
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "pick another --port" in r.stderr and "Traceback" not in r.stderr


def test_text_that_is_not_unicode_and_bodies_that_are_not_utf8_get_400(served):
    """JSON's unpaired \\ud800 escape reached the tokenizer as a lone surrogate: a TypeError, a 500."""
    server = served[0]
    status, _, data = call(server, "POST", "/generate", raw=b'{"prompt": "a \\ud800 red circle"}')
    assert status == 400 and '"prompt" is not valid Unicode text (character 2' in json.loads(data)["error"]
    status, _, data = call(server, "POST", "/generate", raw=b'{"prompt": "caf\xe9"}')
    assert status == 400 and "the body is not UTF-8 text (byte 15)" in json.loads(data)["error"]


def test_progress_counts_the_steps_of_the_video_being_made(served):
    """GET /progress from inside each denoising step of a 3-step request, then once idle."""
    server, pipe, _ = served
    seen, recording = [], pipe.generate

    def probing(*args, **kwargs):
        inner = kwargs["callback"]

        def callback(i, t, latents):
            inner(i, t, latents)
            seen.append(json.loads(call(server, "GET", "/progress")[2]))

        return recording(*args, **{**kwargs, "callback": callback})

    pipe.generate = probing
    try:
        assert call(server, "POST", "/generate", {"prompt": "a red circle", "steps": 3})[0] == 200
    finally:
        pipe.generate = recording
    assert seen == [{"busy": True, "step": i, "steps": 3, "waiting": 0} for i in (1, 2, 3)]
    assert json.loads(call(server, "GET", "/progress")[2]) == {"busy": False, "waiting": 0}


def test_a_long_video_in_segments(served, tmp_path):
    """ "then" adds segments as generate's --then: 9 + 2 x (9 - 1) frames; progress counts every segment's
    steps; chain keys are checked by name, and refused without "then"."""
    server, _, made = served
    body = {"prompt": "a red circle", "then": ["a blue circle", "a red circle"], "seed": 4, "steps": 2}
    status, headers, data = call(server, "POST", "/generate", {**body, "adain": 0.5})
    assert status == 200, data[:300]
    assert decoded(data, tmp_path).shape == (25, 64, 64, 3)
    for bad, message in [
        ({"overlap": 4}, '"overlap" must be 1 or 8k+1 frames'),
        ({"overlap": 9}, '"overlap" 9 leaves no new frames'),
        ({"then": "a blue circle"}, '"then" must be a list of prompts'),
        ({"then": [], "adain": 0.5}, "['adain'] only apply to a long video"),
    ]:
        status, _, reply = call(server, "POST", "/generate", {**body, **bad})
        assert status == 400 and message in json.loads(reply)["error"], (bad, reply)
