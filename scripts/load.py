#!/usr/bin/env python3
"""Load an OpenAI-compatible server the way chat clients do, and the same load on llama-server.

    python3 scripts/load.py [--model smollm2] [--fastgen target/release/fastgen]
        [--llama-cpp DIR | --no-llama-cpp] [--streams 8] [--tokens 128]
        [--turns 4] [--history 1000] [--kv fastgen] [--json OUT]

For each server in turn (never both at once: they would share the cores), it starts the server
with room for --streams requests at once (`fastgen serve --slots N`, `llama-server --parallel N`
with N times the context), then runs:

1. one stream, then --streams concurrent streams, each a chat request for exactly --tokens
   greedy tokens (`ignore_eos`), streamed: aggregate tokens/s over the wall time of the batch,
   time to first token (TTFT) and time between tokens (TBT) at p50 and p95;
2. a conversation of --turns turns, each asking for 32 tokens: the first brings about --history
   tokens of essay text, the later ones a short follow-up question each, so every later turn
   carries about that much history (grown by the answers and questions before it): TTFT of every turn, then the same prompts again with the
   server's prompt cache off (`cache_prompt: false`), so "warm / cold" says what reusing the
   previous turn's cache saved, and whether the warm answers are the cold ones (and, for
   fastgen, how many prompt tokens each turn reused);
and reports each server's peak resident memory (VmHWM) after the run.

The essays come from fastgen's data cache (`fastgen eval` fetches them). The model is resolved
with `fastgen fetch`, so both servers load the same file. Python standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

from llama_server import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOME = pathlib.Path(os.environ.get("FASTGEN_HOME", os.path.expanduser("~/.cache/fastgen")))
CTX = 4096  # per request


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Server(ServerProcess):
    """A server under load; `name` is "fastgen" or "llama.cpp"."""

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stream(self, body: dict) -> dict:
        """One streamed chat request: arrival times of the content chunks."""
        body = dict(body, stream=True)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.monotonic()
        c.request("POST", "/v1/chat/completions", json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {r.status}: {r.read()[:300]!r}")
        times, text, kv_stats = [], [], None
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            kv_stats = chunk.get("kv_stats", kv_stats)
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    times.append(time.monotonic() - t0)
                    text.append(piece)
        c.close()
        return {"start": t0, "times": times, "text": "".join(text), "kv_stats": kv_stats}


def chat(messages: list[dict], tokens: int, kv: str, cache: bool = True) -> dict:
    body = {"messages": messages, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "cache_prompt": cache}
    if kv:
        body["kv_policy"] = kv
    return body


def concurrent(server: Server, n: int, tokens: int, kv: str) -> dict:
    """n streams at once, each asked a different question."""
    results: list[dict | Exception] = [None] * n

    def one(i: int) -> None:
        msg = [{"role": "user", "content": f"Tell me a long story about a lighthouse keeper, number {i}."}]
        try:
            results[i] = server.stream(chat(msg, tokens, kv))
        except Exception as e:  # reported below, not lost
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    errors = [str(r) for r in results if isinstance(r, Exception)]
    ok = [r for r in results if isinstance(r, dict)]
    ttft = [r["times"][0] for r in ok if r["times"]]
    tbt = [b - a for r in ok for a, b in zip(r["times"], r["times"][1:])]
    generated = sum(len(r["times"]) for r in ok)
    return {"streams": n, "tokens": generated, "wall_s": wall, "tok_s": generated / wall,
            "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "tbt_p50": pct(tbt, 50), "tbt_p95": pct(tbt, 95), "errors": errors}


FOLLOW_UPS = ["What is its main argument?", "Which example supports it best?",
              "What would a critic say?", "Summarise that in one sentence.",
              "What should a reader do next?"]


def conversation(server: Server, turns: int, history: int, kv: str) -> dict:
    """A multi-turn chat: about `history` tokens of essay first, then short follow-ups."""
    essay = (HOME / "data/essays/worked.txt").read_text()
    part = essay[:4 * history]  # about 4 characters per token in English prose
    messages: list[dict] = []
    prompts, warm, answers, reused = [], [], [], []
    for t in range(turns):
        if t == 0:
            content = f"Here is an essay:\n{part}\nSummarise it."
        else:
            content = FOLLOW_UPS[(t - 1) % len(FOLLOW_UPS)]
        messages.append({"role": "user", "content": content})
        prompts.append(list(messages))
        r = server.stream(chat(messages, 32, kv))
        warm.append(r["times"][0] if r["times"] else float("nan"))
        answers.append(r["text"])
        reused.append((r["kv_stats"] or {}).get("prompt_tokens_reused"))
        messages.append({"role": "assistant", "content": r["text"]})
    cold, same = [], 0
    for p, answer in zip(prompts, answers):
        r = server.stream(chat(p, 32, kv, cache=False))
        cold.append(r["times"][0] if r["times"] else float("nan"))
        same += r["text"] == answer
    return {"turns": turns, "ttft_warm": warm, "ttft_cold": cold, "reused": reused,
            "same_answers": same, "warm_over_cold": [w / c for w, c in zip(warm, cold)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--fastgen", default=str(ROOT / "target/release/fastgen"))
    ap.add_argument("--llama-cpp", default=str(HOME / "llama.cpp"))
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--kv", default="", help="fastgen's KV method per request (default: the server's)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--port", type=int, default=8411)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.streams < 1 or a.tokens < 1 or a.turns < 1:
        sys.exit("--streams, --tokens and --turns must be at least 1")
    fetched = subprocess.run([a.fastgen, "fetch", a.model], capture_output=True, text=True)
    if fetched.returncode != 0:
        sys.exit(f"fastgen fetch {a.model}: {fetched.stderr.strip()}")
    model_file = fetched.stdout.strip().splitlines()[-1].split("\t")[-1]
    servers = [Server("fastgen", [a.fastgen, "serve", "-m", model_file, "--port", str(a.port),
                                  "--slots", str(a.streams), "-t", str(a.threads)], a.port)]
    if not a.no_llama_cpp:
        binary = pathlib.Path(a.llama_cpp) / "bin/llama-server"
        if not binary.exists():
            sys.exit(f"{binary} not found: build it with scripts/build-llama-cpp.sh, or pass --no-llama-cpp")
        servers.append(Server("llama.cpp", [str(binary), "-m", model_file, "--port", str(a.port + 1),
                                            "--parallel", str(a.streams), "-c", str(CTX * a.streams),
                                            "-t", str(a.threads)], a.port + 1))
    report = {"model": a.model, "file": model_file, "streams": a.streams, "tokens": a.tokens,
              "servers": {}}
    for s in servers:
        with s:
            kv = a.kv if s.name == "fastgen" else ""
            one = concurrent(s, 1, a.tokens, kv)
            many = concurrent(s, a.streams, a.tokens, kv)
            conv = conversation(s, a.turns, a.history, kv)
            rss = s.peak_rss_mib()
        report["servers"][s.name] = {"one": one, "many": many, "conversation": conv,
                                     "peak_rss_mib": rss}
        for label, r in (("1 stream", one), (f"{a.streams} streams", many)):
            print(f"{s.name:>9} {label:>10}: {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50']*1e3:6.0f} ms "
                  f"p95 {r['ttft_p95']*1e3:6.0f} ms  TBT p50 {r['tbt_p50']*1e3:5.1f} ms p95 "
                  f"{r['tbt_p95']*1e3:5.1f} ms  errors {len(r['errors'])}", flush=True)
        print(f"{s.name:>9} {'scaling':>10}: {many['tok_s'] / one['tok_s']:.2f}x one stream")
        print(f"{s.name:>9} {'turns':>10}: TTFT warm "
              + " ".join(f"{t*1e3:.0f}" for t in conv["ttft_warm"]) + " ms, cold "
              + " ".join(f"{t*1e3:.0f}" for t in conv["ttft_cold"]) + f" ms; peak RSS {rss:.0f} MiB",
              flush=True)
        reused = "" if conv["reused"][0] is None else ", prompt tokens reused " + " ".join(
            str(n) for n in conv["reused"])
        print(f"{s.name:>9} {'answers':>10}: warm = cold in {conv['same_answers']} of {a.turns} turns"
              + reused, flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
