"""The quality benchmark runs end to end (tiny model, a few reviews); no figures asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quality_script_prints_a_table(tiny_train_result, home):
    import os

    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--limit", "12",
         "--model", f"tiny={tiny_train_result.bundle_dir}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "SHOPSENSE_HOME": str(home)},
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("all held-out") and "baseline:vader" in line for line in lines)
    assert sum(" tiny " in line for line in lines) == 3
