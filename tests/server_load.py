"""Load figure for `fastgen serve` (not part of CI).

    python tests/server_load.py URL [--pid PID] [--requests 16] [--max-tokens 128]
                                    [--kv-policy fastgen|full|window|h2o]

Sends N concurrent streaming chat requests of exactly --max-tokens tokens each (ignore_eos)
with the official `openai` client, and prints: how many completed, total generated
tokens/s over the wall time, p50/p95 latency and time to first token, and (with --pid) the
server's peak RSS (VmHWM) from /proc.
"""

import argparse
import statistics
import threading
import time

from openai import OpenAI


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--kv-policy", default="fastgen")
    a = ap.parse_args()
    client = OpenAI(base_url=a.url.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=900)
    results, errors = [None] * a.requests, []

    def one(i):
        t0 = time.time()
        first, tokens, kv = None, 0, None
        try:
            stream = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Tell story number {i} about a ship."}],
                max_tokens=a.max_tokens,
                temperature=0.7,
                seed=i,
                stream=True,
                extra_body={"kv_policy": a.kv_policy, "ignore_eos": True},
            )
            for c in stream:
                if first is None and c.choices and c.choices[0].delta.content:
                    first = time.time() - t0
                if c.usage is not None:
                    tokens = c.usage.completion_tokens
                    kv = (c.model_extra or {}).get("kv_stats")
            results[i] = (time.time() - t0, first or 0.0, tokens, kv)
        except Exception as e:  # noqa: BLE001 - counted and shown
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.requests)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    done = [r for r in results if r is not None]
    lat = [r[0] for r in done]
    ttft = [r[1] for r in done]
    tokens = sum(r[2] for r in done)
    full = [r[3] for r in done if r[3]]
    print(f"kv_policy {a.kv_policy}: {len(done)}/{a.requests} complete, {tokens} tokens "
          f"({sum(r[2] == a.max_tokens for r in done)} with all {a.max_tokens}) in {wall:.1f} s")
    print(f"  total {tokens / wall:.1f} tok/s; latency p50 {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s; "
          f"first token p50 {pct(ttft, 50):.2f} s, p95 {pct(ttft, 95):.2f} s")
    if full:
        print(f"  kv_stats (one request): policy applied {full[0].get('kv_policy_applied')}, "
              f"pruned {statistics.mean(k['pruned_ratio'] for k in full):.3f}, "
              f"allocated {full[0]['kv_bytes_allocated'] / 2**20:.2f} MiB of {full[0]['kv_bytes_full'] / 2**20:.2f} MiB")
    if a.pid:
        print(f"  server peak RSS {peak_rss_mib(a.pid):.0f} MiB")
    if errors:
        print("errors:", errors[:5])


if __name__ == "__main__":
    main()
