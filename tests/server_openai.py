"""The official `openai` Python client against a running `fastgen serve`.

Usage: python tests/server_openai.py http://127.0.0.1:PORT

Needs the `openai` package (`.ci/run` installs a pinned version into a virtual env). The
server must run with its defaults for --slots (4), --queue (>= 8) and --max-body-kib (1024).
Prints one line per test and a closing "N passed, M failed"; exits non-zero on a failure.
"""

import http.client
import json
import sys
import threading
import time
import traceback
import urllib.parse

import openai
from openai import OpenAI

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
URL = urllib.parse.urlparse(BASE)
MODEL = "smollm2"
# No retries: a 429 or 5xx must show, not be retried away.
client = OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=300)
KV_KEYS = {"pruned_ratio", "kv_bytes_allocated", "kv_bytes_full", "profile_ms", "policy_histogram"}


def ask(content, **kw):
    return dict(model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, **kw)


def extra(obj, name):
    """A field the OpenAI types do not declare (kv_stats, timings)."""
    return (obj.model_extra or {}).get(name)


def raw(method, path, body=b"", headers=None):
    """(status, parsed JSON or text) of a request sent as is."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
    except (ConnectionResetError, BrokenPipeError) as e:
        raise AssertionError(f"{method} {path}: connection failed: {e}")
    finally:
        conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def metric(name):
    status, text = raw("GET", "/metrics")
    assert status == 200, status
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def check_error(status, body, want, param=None, code=None):
    assert status == want, f"status {status}, want {want}: {body}"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err


def check_kv_stats(kv, policy="fastgen"):
    assert kv is not None and KV_KEYS <= set(kv), kv
    assert kv["kv_policy"] == policy, kv
    assert 0.0 <= kv["pruned_ratio"] <= 1.0, kv
    assert kv["kv_bytes_full"] > 0 and kv["kv_bytes_allocated"] > 0, kv
    assert sum(kv["policy_histogram"].values()) > 0, kv


def stream_chat(content, max_tokens, on_first=None, **kw):
    """Streams a chat completion; returns (text, chunks)."""
    chunks, text = [], []
    stream = client.chat.completions.create(
        **ask(content, max_tokens=max_tokens, stream=True, **kw)
    )
    for c in stream:
        chunks.append(c)
        if c.choices and c.choices[0].delta.content:
            text.append(c.choices[0].delta.content)
            if on_first is not None and len(text) == 1:
                on_first()
    return "".join(text), chunks


# --- tests ------------------------------------------------------------------------------


def test_model_list():
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL], ids
    assert client.models.retrieve(MODEL).id == MODEL
    try:
        client.models.retrieve("gpt-4o")
        raise AssertionError("unknown model was found")
    except openai.NotFoundError as e:
        check_error(e.status_code, e.body and {"error": e.body}, 404, code="model_not_found")


def test_chat_completion():
    r = client.chat.completions.create(**ask("What is the capital of France?", max_tokens=16))
    assert r.object == "chat.completion" and r.model == MODEL, r
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content, choice
    assert choice.finish_reason in ("stop", "length"), choice
    u = r.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    check_kv_stats(extra(r, "kv_stats"))
    print(f"    answer: {choice.message.content!r}")


def test_chat_streaming():
    prompt = "Write one sentence about the sea."
    ref = client.chat.completions.create(**ask(prompt, max_tokens=20))
    text, chunks = stream_chat(prompt, 20, stream_options={"include_usage": True})
    assert text == ref.choices[0].message.content, (text, ref.choices[0].message.content)
    assert chunks[0].object == "chat.completion.chunk", chunks[0]
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert len({c.id for c in chunks}) == 1, "one id per stream"
    with_choice = [c for c in chunks if c.choices]
    assert with_choice[-1].choices[0].finish_reason == ref.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in with_choice[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == ref.usage.completion_tokens, (last.usage, ref.usage)
    check_kv_stats(extra(last, "kv_stats"))
    # Without include_usage the finishing chunk itself carries usage and kv_stats.
    _, chunks = stream_chat(prompt, 4)
    assert chunks[-1].choices[0].finish_reason == "length", chunks[-1]
    assert chunks[-1].usage.completion_tokens == 4, chunks[-1]
    check_kv_stats(extra(chunks[-1], "kv_stats"))


def test_completions():
    r = client.completions.create(model=MODEL, prompt="The sea is", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text, r
    assert r.usage.completion_tokens == 12, r.usage
    check_kv_stats(extra(r, "kv_stats"))
    parts, final = [], None
    for c in client.completions.create(
        model=MODEL, prompt="The sea is", max_tokens=12, temperature=0, stream=True
    ):
        parts.append(c.choices[0].text)
        final = c
    assert "".join(parts) == r.choices[0].text, (parts, r.choices[0].text)
    assert final.choices[0].finish_reason == "length", final
    check_kv_stats(extra(final, "kv_stats"))
    # Stop sequences and token-id prompts.
    r = client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[" 7"]
    )
    assert r.choices[0].finish_reason == "stop" and " 7" not in r.choices[0].text, r
    r = client.completions.create(model=MODEL, prompt=[504, 3214, 314], max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens == 3, r.usage


def test_kv_fields():
    for policy in ("fastgen", "full", "window", "h2o"):
        r = client.chat.completions.create(
            **ask("Hi", max_tokens=4), extra_body={"kv_policy": policy, "kv_recovery": 0.9}
        )
        kv = extra(r, "kv_stats")
        check_kv_stats(kv, policy)
        if policy == "fastgen":
            assert kv["kv_recovery"] == 0.9 and kv["kv_recovery_requested"] == 0.9, kv
    # The default keeps a short chat whole: the full cache's answer, token for token.
    answers = {}
    for policy in ("fastgen", "full"):
        r = client.chat.completions.create(
            **ask("Write a haiku about the sea.", max_tokens=48), extra_body={"kv_policy": policy}
        )
        answers[policy] = r.choices[0].message.content
        kv = extra(r, "kv_stats")
        if policy == "fastgen":
            assert kv["compressed_at"] is None and kv["pruned_ratio"] == 0.0, kv
            assert kv["kv_compress_from"] == 512, kv
    assert answers["fastgen"] == answers["full"], answers
    for body, param in (
        ({"kv_policy": "lru"}, "kv_policy"),
        ({"kv_compress_from": -3}, "kv_compress_from"),
        ({"kv_recovery": 0}, "kv_recovery"),
        ({"kv_recovery": 1.5}, "kv_recovery"),
        ({"kv_recovery": "high"}, "kv_recovery"),
    ):
        try:
            client.chat.completions.create(**ask("Hi", max_tokens=4), extra_body=body)
            raise AssertionError(f"{body} was accepted")
        except openai.BadRequestError as e:
            check_error(e.status_code, {"error": e.body}, 400, param=param)


def test_concurrent_streams():
    n = 8
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = stream_chat(f"Count from {i} to {i + 5}.", 24)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"stream {i}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, r in enumerate(results):
        assert r is not None, f"stream {i} did not finish"
        text, chunks = r
        last = chunks[-1]
        assert text and last.choices[0].finish_reason in ("stop", "length"), (i, last)
        assert last.usage.completion_tokens <= 24, last.usage
    tokens = sum(r[1][-1].usage.completion_tokens for r in results)
    print(f"    {n} streams, {tokens} tokens in {time.time() - t0:.1f} s")


def test_malformed_requests_during_a_stream():
    prompt = "Tell me a story about a lighthouse keeper."
    ref = client.chat.completions.create(**ask(prompt, max_tokens=96)).choices[0].message.content
    started, out = threading.Event(), {}

    def run():
        try:
            out["text"], out["chunks"] = stream_chat(prompt, 96, on_first=started.set)
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = repr(e)
        finally:
            out["ended"] = time.time()
            started.set()

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(120), "the stream did not start"
    chat = "/v1/chat/completions"
    hi = [{"role": "user", "content": "hi"}]
    cases = [
        (chat, b'{"messages": [', 400, None),
        (chat, b"", 400, None),
        (chat, b"[1, 2]", 400, None),
        (chat, json.dumps({"messages": "hi"}).encode(), 400, "messages"),
        (chat, json.dumps({"messages": [{"role": "user"}]}).encode(), 400, "messages[0].content"),
        (chat, json.dumps({"messages": hi, "temperature": "warm"}).encode(), 400, "temperature"),
        (chat, json.dumps({"messages": hi, "temperature": 9}).encode(), 400, "temperature"),
        (chat, json.dumps({"messages": hi, "max_tokens": -3}).encode(), 400, "max_tokens"),
        (chat, json.dumps({"messages": hi, "n": 2}).encode(), 400, "n"),
        (chat, json.dumps({"messages": hi, "model": "gpt-4o"}).encode(), 404, "model"),
        ("/v1/completions", json.dumps({"prompt": [1] * 8193}).encode(), 400, "prompt"),
        ("/v1/completions", json.dumps({"prompt": "x" * (1100 * 1024)}).encode(), 413, None),
        ("/v1/nothing", b"{}", 404, None),
    ]
    for path, body, want, param in cases:
        status, resp = raw("POST", path, body)
        check_error(status, resp, want, param=param)
    # The same through the client.
    for kw, exc in (
        (dict(temperature=-1), openai.BadRequestError),
        (dict(top_p=0), openai.BadRequestError),
        (dict(model="nope"), openai.NotFoundError),
    ):
        args = ask("hi", max_tokens=4)
        args.update(kw)
        try:
            client.chat.completions.create(**args)
            raise AssertionError(f"{kw} was accepted")
        except exc:
            pass
    errors_done = time.time()
    t.join(timeout=300)
    assert "error" not in out, out.get("error")
    assert errors_done < out["ended"], "the stream ended before the bad requests were answered"
    assert out["text"] == ref, (out["text"], ref)
    assert out["chunks"][-1].choices[0].finish_reason == "length"
    assert raw("GET", "/health")[0] == 200


def test_cancelled_stream_frees_its_slot():
    cancelled0 = metric("fastgen_requests_cancelled_total")
    # Two long streams take two slots; read a little of each, then hang up.
    streams = [
        client.chat.completions.create(**ask(f"Write a long essay, part {i}.", max_tokens=2000, stream=True))
        for i in range(2)
    ]
    for s in streams:
        for _, _ in zip(range(3), s):
            pass
    assert metric("fastgen_slots_busy") == 2
    t0 = time.time()
    for s in streams:
        s.close()
    while metric("fastgen_slots_busy") != 0 or metric("fastgen_kv_bytes_in_use") != 0:
        assert time.time() - t0 < 10, "the slots were not freed"
        time.sleep(0.02)
    freed = time.time() - t0
    assert metric("fastgen_requests_cancelled_total") == cancelled0 + 2
    # Both slots take new work.
    texts = []
    threads = [
        threading.Thread(target=lambda: texts.append(stream_chat("Say yes.", 8)[0])) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(texts) == 2 and all(texts), texts
    print(f"    slots and KV freed {freed * 1000:.0f} ms after the hang-up")


def test_metrics():
    status, text = raw("GET", "/metrics")
    assert status == 200
    for name in (
        "fastgen_requests_total",
        "fastgen_prompt_tokens_total",
        "fastgen_generated_tokens_total",
        "fastgen_decode_tokens_per_second",
        "fastgen_kv_bytes_in_use",
        "fastgen_kv_pruned_ratio_bucket",
        "fastgen_queue_depth",
    ):
        assert name in text, name
    assert 'status="400"' in text and 'status="413"' in text and 'status="200"' in text
    assert metric("fastgen_generated_tokens_total") > 0


TESTS = [
    test_model_list,
    test_chat_completion,
    test_chat_streaming,
    test_completions,
    test_kv_fields,
    test_concurrent_streams,
    test_malformed_requests_during_a_stream,
    test_cancelled_stream_frees_its_slot,
    test_metrics,
]


def main():
    print(f"openai {openai.__version__} against {BASE}")
    passed = failed = 0
    for test in TESTS:
        t0 = time.time()
        try:
            test()
        except Exception:  # noqa: BLE001 - every failure is reported and counted
            failed += 1
            print(f"FAIL {test.__name__} ({time.time() - t0:.1f} s)")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {test.__name__} ({time.time() - t0:.1f} s)")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
