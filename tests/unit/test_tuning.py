"""The garbage-collector tuning ``forebay serve`` applies (each case in a fresh interpreter,
since it changes the process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import gc
from forebay.execution.tuning import GEN0_THRESHOLD, tune_gc
{before}
first = tune_gc()
print(first, gc.get_threshold()[0], gc.get_freeze_count() > 0, tune_gc())
"""


def run(before: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(before=before)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_default_collector_is_frozen_and_its_first_threshold_raised_once() -> None:
    from forebay.execution.tuning import GEN0_THRESHOLD

    tuned, gen0, frozen, again = run("")
    assert (tuned, gen0, frozen) == ("True", str(GEN0_THRESHOLD), "True")
    assert again == "False"  # a second call changes nothing


@pytest.mark.parametrize(
    ("before", "gen0"),
    [("gc.set_threshold(5000, 10, 10)", "5000"), ("gc.disable()", "700")],
)
def test_a_process_that_chose_its_own_collector_settings_is_left_alone(
    before: str, gen0: str
) -> None:
    assert run(before) == ["False", gen0, "False", "False"]
