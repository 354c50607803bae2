"""How `s2p serve` runs: its limits, the socket, uvicorn.

The socket is bound before the model loads, so a taken port is one line at once,
and `--port 0` (any free port) can print the port it got. Light to import: the
CLI builds its parser (the limits' defaults) without loading the app.
"""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 32 * 2**20  # one request body: sketch + references
    max_pixels: int = 50_000_000  # declared width x height of one uploaded image
    max_side: int = 2048  # long side of a painting (its cost grows with pixels)
    max_references: int = 8  # per request (the swap view)
    max_queue: int = 16  # requests accepted at once: one painting + the rest waiting


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only "localhost" is known to stay on this machine
        return False


def listen(host: str, port: int) -> socket.socket:
    from pipeline.colorize import ColorizeError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        raise ColorizeError(f"--host {host}: cannot resolve ({err.strerror or err})") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ColorizeError(f"{host}:{port}: cannot listen ({err.strerror or err})") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def uvicorn_server(app):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=5))


def run_server(app, sock: socket.socket) -> None:
    """Serve `app` on the bound `sock` until Ctrl-C (or SIGTERM)."""
    uvicorn_server(app).run(sockets=[sock])


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0):
    """Serve `app` on a background thread (tests, benchmarks, screenshots); yields its URL."""
    sock = listen(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.02)
        yield url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
