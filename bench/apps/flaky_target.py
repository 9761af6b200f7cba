"""An HTTP target for the retry benchmark: fails every record's first attempt (503), accepts the
rest, and counts what it accepted (GET /count). Usage: python flaky_target.py PORT"""

from __future__ import annotations

import sys

from aiohttp import web

accepted = 0


async def handle(request: web.BaseRequest) -> web.Response:
    global accepted
    if request.method == "GET":
        return web.Response(text=str(accepted))
    await request.read()
    if request.headers.get("X-Wal-Attempt") == "0":
        return web.Response(status=503)
    accepted += 1
    return web.Response(status=200)


async def serve(port: int) -> None:
    import asyncio

    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio

    asyncio.run(serve(int(sys.argv[1])))
