"""Server processes for the scripts: started, waited for until /health answers "ok", asked for
JSON, always stopped. `LlamaServer` is llama-server on a GGUF (the fixture scripts);
`ServerProcess` any such server (scripts/load.py also runs `fastgen serve`). Python 3.11
standard library only.

    with LlamaServer(server_binary, model, port, ["-t", "1"]) as s:
        ids = s.post("/tokenize", {"content": "hi"})["tokens"]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


class ServerProcess:
    """A server started with `cmd` on `port`, ready once /health says "ok", always stopped."""

    def __init__(self, name: str, cmd: list[str], port: int, ready_seconds: float = 300):
        self.name, self.cmd, self.port = name, cmd, port
        self.ready_seconds = ready_seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited with {self.proc.returncode}: {' '.join(self.cmd)}")
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=5) as r:
                    if json.load(r).get("status") == "ok":
                        return self
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.__exit__()
        sys.exit(f"{self.name} did not become ready: {' '.join(self.cmd)}")

    def post(self, path: str, body: dict, timeout: float = 600) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class LlamaServer(ServerProcess):
    def __init__(self, binary, model, port: int, args: list[str], ready_seconds: float = 300):
        cmd = [str(binary), "-m", str(model), "--port", str(port), *args]
        super().__init__("llama-server", cmd, port, ready_seconds)
