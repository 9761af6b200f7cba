"""walstream.aio.supervised: the backoff sequence, its reset, cancellation, nothing escapes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from walstream.aio import Backoff, supervised

LOG = logging.getLogger("test.supervised")


class Script:
    """A step that fails or succeeds as scripted, and stops the loop when the script ends."""

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.slept: list[float] = []
        #: what happened, in order: "ok", "fail", or a wait
        self.events: list[object] = []

    def running(self) -> bool:
        return bool(self.outcomes)

    async def step(self) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            self.events.append("fail")
            raise outcome
        self.events.append("ok")

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.events.append(delay)


async def run(script: Script, **kwargs: object) -> None:
    await supervised(
        "svc",
        script.step,
        backoff=Backoff(first_s=0.1, cap_s=1.0),
        log=LOG,
        running=script.running,
        sleep=script.sleep,
        **kwargs,  # type: ignore[arg-type]  # test passes keyword options through
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(first_s=0.5, cap_s=30.0).delays()
    assert [next(delays) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize(("first", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_backoff_refuses_a_nonsense_policy(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s=first, cap_s=cap)


async def test_failures_in_a_row_wait_longer_and_longer_up_to_the_cap() -> None:
    script = Script([RuntimeError("x")] * 6)
    await run(script)
    assert script.slept == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert script.calls == 6


async def test_a_step_that_succeeds_starts_the_backoff_over() -> None:
    boom = RuntimeError("boom")
    script = Script([boom, boom, boom, None, None, boom, boom, None, boom])
    await run(script)
    assert script.events == [
        *("fail", 0.1, "fail", 0.2, "fail", 0.4),
        *("ok", "ok"),  # no wait after a step that succeeds
        *("fail", 0.1, "fail", 0.2),  # the count starts over
        "ok",
        *("fail", 0.1),
    ]


async def test_no_exception_escapes_and_each_reaches_on_error() -> None:
    errors = [ValueError("a"), KeyError("b"), OSError("c"), ZeroDivisionError()]
    seen: list[Exception] = []
    script = Script([*errors, None])
    await run(script, on_error=seen.append)  # returns normally: nothing raised
    assert seen == errors
    assert script.calls == 5


async def test_an_on_error_that_fails_does_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(exc: Exception) -> None:
        raise LookupError("handler broke")

    script = Script([RuntimeError("x"), RuntimeError("y"), None])
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await run(script, on_error=broken)
    assert script.calls == 3
    assert script.slept == [0.1, 0.2]
    assert sum("its error handler failed" in r.getMessage() for r in caplog.records) == 2


async def test_expected_errors_are_logged_without_a_traceback_others_with_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([OSError("broker away"), ValueError("surprise")])
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await run(script, expected=(OSError,), retry_word="starting over")
    first, second = caplog.records
    assert (first.levelno, first.getMessage(), first.exc_info) == (
        logging.WARNING,
        "svc: broker away; starting over in 0.1s",
        None,
    )
    assert second.levelno == logging.ERROR
    assert second.getMessage() == "svc failed; starting over in 0.2s"
    assert second.exc_info is not None
    assert second.exc_info[0] is ValueError


async def test_not_running_runs_no_step() -> None:
    script = Script([])
    await run(script)
    assert script.calls == 0


@pytest.mark.parametrize("where", ["step", "wait"])
async def test_a_cancel_during_a_step_or_a_wait_ends_the_loop(where: str) -> None:
    """The step hangs (no failure, no wait), or it fails and the wait hangs: a cancel ends it."""
    reached = asyncio.Event()
    steps = 0

    async def hang() -> None:
        reached.set()
        await asyncio.Event().wait()  # forever

    async def step() -> None:
        nonlocal steps
        steps += 1
        if where == "step":
            await hang()
        raise RuntimeError("fails")

    async def sleep(delay: float) -> None:
        assert where == "wait", "no failure, no wait"
        await hang()

    task = asyncio.create_task(
        supervised("svc", step, backoff=Backoff(first_s=0.1, cap_s=1.0), log=LOG, sleep=sleep)
    )
    await asyncio.wait_for(reached.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert steps == 1


async def test_a_step_raising_cancelled_error_is_not_retried() -> None:
    script = Script([asyncio.CancelledError(), None])
    with pytest.raises(asyncio.CancelledError):
        await run(script)
    assert script.calls == 1
    assert script.slept == []
