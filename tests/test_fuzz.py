"""scripts/fuzz for every target, 10,000 inputs each: every input parses or raises our
ParseError, and nothing raises out of a session. A million inputs per target are a manual
run (docs/robustness.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "scripts" / "fuzz"


@pytest.mark.parametrize(
    ("target", "runs"),
    [
        ("rtp", 10000),
        ("rtcp", 10000),
        ("control", 10000),
        ("sdp", 10000),
        ("stun", 10000),
        ("turn", 10000),
        ("words", 10000),
        ("code", 10000),
        ("session", 10000),
    ],
)
def test_the_fuzzer_finds_nothing(target, runs, tmp_path):
    result = subprocess.run(
        [sys.executable, str(FUZZ), target, "--runs", str(runs), "--seed", "1"],  # the same inputs each time
        cwd=tmp_path,  # where libFuzzer would leave a crash-* input
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)  # libFuzzer may add the seed corpus to the count
    assert done is not None and int(done.group(1)) >= runs, result.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))
