"""A TCP proxy in front of a real server, to take the server away and give it back.

``cut()`` closes the listening socket and every open connection, as a crashed server
would look to its clients (connection refused, connections reset); ``restore()``
listens again on the same port. ``stall()`` keeps every connection open and accepts new
ones but passes nothing on, as a stopped (SIGSTOP) or hung server looks; ``restore()``
passes on again what was held.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse


class Proxy:
    """Forwards 127.0.0.1:<port> to ``host``:``target_port`` until cut."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.held = 0
        """Chunks that arrived while stalled (a request a client waits for, or its answer)."""

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self._flowing.set()  # what waited for a stall to end finds its connection closed

    def stall(self) -> None:
        self._flowing.clear()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if not self._flowing.is_set():
            self.held += 1
            await self._flowing.wait()
        if writer.is_closing():
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self._flowing.is_set():
                    self.held += 1
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()


def through(url: str, proxy: Proxy) -> str:
    """``url`` (Redis or PostgreSQL) with its host and port replaced by the proxy's;
    user, password, path and query stay."""
    parsed = urlparse(url)
    user = parsed.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    return parsed._replace(netloc=netloc).geturl()
