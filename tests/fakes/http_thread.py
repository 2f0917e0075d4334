"""Serve an ASGI app with uvicorn in a background thread, on 127.0.0.1.

The project's fake servers (E-utilities, Twilio) are Starlette apps; tests talk to them over
real sockets, so each one runs in its own thread with its own event loop::

    with ServedApp(app) as served:
        httpx.get(served.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

_HOST = "127.0.0.1"


class ServedApp:
    """An ASGI app listening on ``127.0.0.1`` (a free port unless ``port`` is given).

    ``start()`` returns once the server accepts connections and gives its base URL, e.g.
    ``http://127.0.0.1:54321``; ``stop()`` shuts it down. It can be started again after a
    stop (on the same port when one was given), which lets a test take a server away and
    bring it back.
    """

    startup_timeout_s = 10.0
    # A request handler that never finishes (a fake "hang") must not keep stop() waiting:
    # after this long uvicorn cancels what is still running.
    graceful_shutdown_s = 3

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self._app = app
        self._requested_port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        if self.running:
            return self.url
        # Binding here rather than letting uvicorn bind leaves no window in which another
        # process could take a port we picked but had not bound yet.
        sock = _bind(self._requested_port)
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            host=_HOST,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=self.graceful_shutdown_s,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"served-app-{port}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                sock.close()
                raise RuntimeError(f"uvicorn exited before listening on {_HOST}:{port}")
            if time.monotonic() > deadline:
                server.should_exit = True
                thread.join(self.startup_timeout_s)
                sock.close()
                raise RuntimeError(f"uvicorn did not start on {_HOST}:{port} in time")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        self._url = f"http://{_HOST}:{port}"
        if self._requested_port is None:
            # A restart comes back on the same port, so URLs handed out stay valid.
            self._requested_port = port
        return self._url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._url = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self.graceful_shutdown_s + 5.0)
        if thread.is_alive():
            # Still stuck (e.g. a client that never reads): drop open connections.
            server.force_exit = True
            thread.join(5.0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(port: int | None) -> socket.socket:
    # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only for sockets whose proto
    # is IPPROTO_TCP, and with Nagle on every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted server take its old port back while closed connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((_HOST, port or 0))
    except OSError:
        sock.close()
        raise
    return sock
