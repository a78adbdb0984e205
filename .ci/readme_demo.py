"""Run the README's first command exactly as written, on a clean copy of the checkout, and check it.

What a new user does: copy the project, run the command (a fresh venv, a non-editable install, the demo),
wait for it to serve. Then check what it printed: the stage table counts every shopper it posted, the admin
URL it printed answers (the page and its overview data, with the printed session token), and Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) stops it and every process it started.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_SECONDS = 1200
# Settings a developer's shell may carry that a new user's would not: the demo must work without them.
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH", "SMTP_URL", "SHOPIFY_ADMIN_ORIGIN")


def first_command(readme: str) -> str:
    """The first ```sh block of the README: the command that runs the demo."""
    match = re.search(r"```sh\n(.+?)\n```", readme, re.S)
    if not match:
        sys.exit("README.md has no ```sh block")
    return match.group(1).strip()


def clean_copy() -> Path:
    """The checkout's files (tracked, and new ones not ignored) in a fresh folder: no venv, no instance."""
    target = Path(tempfile.mkdtemp(prefix="lifecycle-readme-")) / "lifecycle"
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, names):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (target / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / os.fsdecode(name))
    return target


class Demo:
    """The command running in its own process group, its output collected line by line."""

    def __init__(self, command: str, cwd: Path):
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("LIFECYCLE_")}
        self.process = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            print("  | " + line.rstrip("\n"), flush=True)

    def wait_for(self, pattern: str, seconds: float) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                time.sleep(0.5)  # let the reader catch the last lines
                fail(f"the command exited with {self.process.returncode} before printing /{pattern}/")
            time.sleep(0.5)
        fail(f"no line matching /{pattern}/ within {seconds:.0f} s")
        raise AssertionError  # unreachable

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the process group; the whole group must be gone within 60 s."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fail("the demo did not stop within 60 s of Ctrl-C")
        for _ in range(40):
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return code
            time.sleep(0.5)
        os.killpg(self.process.pid, signal.SIGKILL)
        fail("processes of the demo were still running 20 s after it exited")
        return code


def fail(message: str) -> None:
    print(f"README demo check FAILED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def fetch(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback only
        return response.status, response.read()


def check_run(command: str, copy: Path, again: bool) -> None:
    """One run of the command: it serves, its tables and admin count every shopper, Ctrl-C stops it."""
    demo = Demo(command, copy)
    try:
        if again:  # a second run on the same instance starts clean and says so
            demo.wait_for(r"^reusing this instance: erased the previous demo shop \((\d+) shoppers\)", 600)
        posted = int(demo.wait_for(r"^demo store: (\d+) shoppers", DEADLINE_SECONDS).group(1))
        total = int(demo.wait_for(r"^total\s+(\d+)$", DEADLINE_SECONDS).group(1))
        admin = demo.wait_for(r"^admin: (http://127\.0\.0\.1:\d+/app/\S+)", 120).group(1)
        demo.wait_for(r"^serving on http://127\.0\.0\.1:\d+", 120)
        if total != posted:
            fail(f"the stage table counts {total} shoppers; the demo posted {posted}")
        status, page = fetch(admin)
        if status != 200 or b"shopify-api-key" not in page:
            fail(f"the admin URL answered {status} without the App Home page")
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(admin).query)["id_token"][0]
        origin = admin.split("/app/")[0]
        _, body = fetch(f"{origin}/app/api/overview", token)
        shoppers = sum(row["shoppers"] for row in json.loads(body)["stages"])
        if shoppers != posted:
            fail(f"the admin's overview counts {shoppers} shoppers; the demo posted {posted}")
        print(f"== checked: {posted} shoppers in the stage table and in the admin's overview", flush=True)
    finally:
        if demo.process.poll() is None:
            code = demo.interrupt()
            print(f"== Ctrl-C: the demo exited with {code}, no process of it left", flush=True)


def main() -> None:
    command = first_command((ROOT / "README.md").read_text())
    copy = clean_copy()
    for again in (False, True):
        print(f"== README's first command, {'again ' if again else ''}in {copy}:\n   {command}", flush=True)
        check_run(command, copy, again)
    shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
