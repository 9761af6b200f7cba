"""The CLI's token: `walstream token new` makes a token and its hash entry; `walstream write`
sends WALSTREAM_TOKEN (or --token) as a bearer token."""

from __future__ import annotations

import asyncio
import os
import re
import sys

from walstream.api.app import create_api
from walstream.core.auth import Role, parse_tokens_setting

from .test_auth import TOKENS, _deps


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "walstream",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_new_prints_a_token_and_the_entry_that_admits_it():
    code, out, _ = await _cli("token", "new", "--role", "writer", "--namespace", "a", "--name", "t")
    assert code == 0
    token = re.search(r"not stored\): (\S+)", out).group(1)
    entry = re.search(r"WALSTREAM_TOKENS entry: (\S+)", out).group(1)
    assert token not in entry
    principal = parse_tokens_setting(entry).lookup(token)
    assert principal is not None
    assert (principal.name, principal.role, principal.namespaces) == ("t", Role.WRITER, {"a"})
    code, _, err = await _cli("token", "new", "--role", "writer")  # namespaces required
    assert code == 2
    assert "--namespace" in err


async def test_write_sends_the_token(api_client):
    deps = _deps()
    client = await api_client(create_api(deps))
    base = str(client.make_url(""))
    code, out, _ = await _cli(
        "write", "a", '{"x": 1}', "--api", base, env={"WALSTREAM_TOKEN": TOKENS["a_writer"]}
    )
    assert code == 0, out
    assert "durable=TRUE status=200" in out
    assert len(deps.producer.sent) == 1
    code, out, _ = await _cli("--token", TOKENS["b_writer"], "write", "a", "1", "--api", base)
    assert code == 1
    assert "status=403" in out
    env = {k: v for k, v in os.environ.items() if k != "WALSTREAM_TOKEN"}
    code, out, _ = await _cli("write", "a", "1", "--api", base, env=env)
    assert code == 1
    assert "status=401" in out
    assert len(deps.producer.sent) == 1
