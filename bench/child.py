"""One way to run a benchmark's part in a fresh interpreter: Unsloth's patches, a crash or an out-of-memory kill
stay in that process, its peak memory is its own, and what it finished is read back from the JSON it wrote."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], result: Path, *, timeout: float | None = None, env: dict | None = None,
              cwd: Path = ROOT) -> dict:
    """Run `cmd`, which writes its record to `result`; return that record with `wall_s`, or one that says why
    there is none: status "timeout" (killed after `timeout` s) or "crashed" (its exit code and stderr's tail)."""
    result = Path(result)
    result.unlink(missing_ok=True)  # never read an earlier run's record as this one's
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"status": "timeout", "error": f"timed out after {timeout:.0f} s", "stderr_tail": tail[-3000:],
                "wall_s": round(time.perf_counter() - t0, 1)}
    wall = round(time.perf_counter() - t0, 1)
    if result.is_file():  # written atomically: whole, or not at all
        rec = json.loads(result.read_text())
        if rec.get("status") == "error":
            rec.setdefault("stderr_tail", p.stderr[-3000:])
        rec.setdefault("wall_s", wall)
        return rec
    why = " (killed by SIGKILL: most likely out of memory)" if p.returncode == -9 else ""
    return {"status": "crashed", "returncode": p.returncode,
            "error": f"exited with {p.returncode}{why} without a result", "stderr_tail": (p.stderr or "")[-3000:],
            "wall_s": wall}
