"""A Docker registry on loopback for the upgrade tests: Debian's docker-registry, installed
by scripts/registry.sh, run by this process (and stopped by its PID), data in a
temporary folder. The engines pull from it over plain HTTP (Docker trusts 127.0.0.0/8)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "registry.sh"
START_TIMEOUT = 30.0


@contextmanager
def running_registry(workdir: Path) -> Iterator[str]:
    """A registry serving until the block ends; its ``127.0.0.1:PORT``."""
    found = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if found.returncode != 0:
        raise RuntimeError(f"scripts/registry.sh failed: {found.stderr[-2000:]}")
    binary = found.stdout.strip().splitlines()[-1]
    address = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        f"http:\n  addr: {address}\n"
    )
    with (workdir / "registry.log").open("ab") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        _wait_ready(address, process, workdir / "registry.log")
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the registry exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no registry at {address} after {START_TIMEOUT:g} s")
