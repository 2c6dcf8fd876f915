"""Worker processes exit by themselves when the process that started them is killed (kill -9)."""

import os
import signal
import subprocess
import sys
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose; its parent (init) reaps it
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("pool", ["preprocess", "ingest"])
def test_workers_exit_when_their_parent_is_killed(tmp_path, pool):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from dataclasses import asdict\n"
        "from pipeline.config import PreprocessConfig\n"
        "from pipeline.data import _init_worker\n"
        "from pipeline.processes import worker_pool\n"
        "args = (_init_worker, (asdict(PreprocessConfig()),)) if sys.argv[1] == 'preprocess' else ()\n"
        "pool = worker_pool(2, *args)\n"
        "list(pool.map(time.sleep, [0.5, 0.5]))  # both workers start\n"
        "print(' '.join(str(pid) for pid in pool._processes), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script), pool], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) >= 2 and all(_alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived their killed parent"
    finally:
        parent.kill()
