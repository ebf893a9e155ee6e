"""A llama-server process for the fixture scripts: started on a GGUF, waited for until it
answers /health, asked for JSON, always stopped. Python 3.11 standard library only.

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


class LlamaServer:
    def __init__(self, binary, model, port: int, args: list[str], ready_seconds: float = 300):
        self.port = port
        self.cmd = [str(binary), "-m", str(model), "--port", str(port), *args]
        self.ready_seconds = ready_seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"llama-server exited with {self.proc.returncode}: {' '.join(self.cmd)}")
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=5) as r:
                    if json.load(r).get("status") == "ok":
                        return self
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.__exit__()
        sys.exit("llama-server did not become ready")

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
