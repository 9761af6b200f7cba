"""An HTTP target for the ordering benchmark. Usage: python ordering_target.py PORT

Refuses (503) every attempt of a record whose payload says ``"stuck":1``, and the first attempt
of one that says ``"flaky":1``; accepts the rest and counts them per namespace
(``GET /count/<namespace>``)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from aiohttp import web

accepted: Counter[str] = Counter()


async def handle(request: web.BaseRequest) -> web.Response:
    if request.method == "GET":
        return web.Response(text=str(accepted[request.path.rsplit("/", 1)[-1]]))
    body = await request.read()
    if b'"stuck":1' in body:
        return web.Response(status=503)
    if b'"flaky":1' in body and request.headers.get("X-Wal-Attempt") == "0":
        return web.Response(status=503)
    accepted[request.headers.get("X-Wal-Namespace", "")] += 1
    return web.Response(status=200)


async def serve(port: int) -> None:
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
