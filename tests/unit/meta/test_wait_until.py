"""The tests' polling helper: when a condition never holds, the failure says why."""

from __future__ import annotations

import pytest

from ...conftest import wait_until


def test_the_last_error_is_raised_again_on_timeout() -> None:
    attempts: list[int] = []

    def check() -> bool:
        attempts.append(1)
        raise KeyError(f"no node yet (attempt {len(attempts)})")

    with pytest.raises(KeyError) as info:
        wait_until(check, timeout=0.3, message="node Ready", interval=0.05)
    assert info.value.args == (f"no node yet (attempt {len(attempts)})",)
    assert len(attempts) > 1  # it kept polling through the errors
    assert info.value.__notes__ == ["timed out after 0.3s waiting: node Ready"]


def test_a_condition_that_stays_false_fails_naming_it() -> None:
    with pytest.raises(AssertionError, match=r"^timed out after 0\.2s waiting: pool Ready$"):
        wait_until(lambda: False, timeout=0.2, message="pool Ready", interval=0.05)


def test_an_error_that_went_away_is_not_blamed() -> None:
    answers = iter([ValueError("transient")])

    def check() -> bool:
        answer = next(answers, False)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(AssertionError, match=r"^timed out after 0\.2s waiting: pool Ready$"):
        wait_until(check, timeout=0.2, message="pool Ready", interval=0.05)
