#!/usr/bin/env python3
"""Record llama.cpp's greedy generations as a parity fixture (tests/reference/greedy-NAME.jsonl).

    python3 scripts/greedy-reference.py MODEL.gguf NAME [--llama-cpp DIR] [--port N]
        [--steps N] [--cases K] [--max-prompt-tokens T] [--out FILE]

Starts DIR/bin/llama-server (DIR defaults to $FASTGEN_HOME/llama.cpp, built by
scripts/build-llama-cpp.sh) on the model, one thread, and for each prompt asks for 48 greedy
tokens with the top 10 log-probabilities before sampling at every step. The prompts are raw
completions (for base models): the user messages of tests/reference/greedy-smollm2.jsonl as
"Question: ...\\nAnswer:", its essay excerpt, and its 2,000-token essay text (long enough to
cross sliding windows). Each prompt is tokenized by the server with the model's special
tokens added (BOS where the model wants it). Output lines have the format of the other
greedy fixtures: {"kind", "prompt", "prompt_ids", "greedy_ids", "greedy_text", "steps"}.

For small fixtures (the synthetic models): --steps N asks for N tokens instead of 48,
--cases K keeps the first K prompts and the long one, --max-prompt-tokens T cuts each
prompt's ids to its first T (the "prompt" text is then the detokenized cut, and
"prompt_ids" what was sent). --out FILE writes there instead of tests/reference (scratch
measurements: scripts/requant-parity.sh). Python standard library only.
"""

import argparse
import json
import os
import pathlib
import sys

from llama_server import LlamaServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 48
TOP = 10


def prompts():
    """(kind, text) pairs taken from the SmolLM2 fixture's texts."""
    out = []
    for line in (ROOT / "tests/reference/greedy-smollm2.jsonl").read_text().splitlines():
        case = json.loads(line)
        text = case["prompt"]
        if case["kind"] == "chat":
            user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
            out.append(("raw", f"Question: {user}\nAnswer:"))
        else:
            out.append((case["kind"], text))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("name")
    home = os.environ.get("FASTGEN_HOME", os.path.expanduser("~/.cache/fastgen"))
    ap.add_argument("--llama-cpp", default=os.path.join(home, "llama.cpp"))
    ap.add_argument("--port", type=int, default=8397)
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra llama-server argument (repeatable), e.g. --server-arg=-fa --server-arg=off")
    ap.add_argument("--steps", type=int, default=STEPS, help="greedy tokens per prompt")
    ap.add_argument("--cases", type=int, default=0,
                    help="keep the first K prompts and the long one (0: all)")
    ap.add_argument("--max-prompt-tokens", type=int, default=0,
                    help="cut each prompt to its first T tokens (0: whole)")
    ap.add_argument("--out", help="output file (default tests/reference/greedy-NAME.jsonl)")
    args = ap.parse_args()

    binary = os.path.join(args.llama_cpp, "bin", "llama-server")
    server_args = ["-t", "1", "-c", "8192", "--parallel", "1", "--no-webui", *args.server_arg]
    with LlamaServer(binary, args.model, args.port, server_args) as server:
        post = server.post
        dest = pathlib.Path(args.out) if args.out else ROOT / f"tests/reference/greedy-{args.name}.jsonl"
        with open(dest, "w") as f:
            cases = prompts()
            if args.cases:
                cases = cases[:args.cases] + [c for c in cases[args.cases:] if c[0] == "raw-long"]
            for kind, text in cases:
                ids = post("/tokenize",
                           {"content": text, "add_special": True, "parse_special": True})["tokens"]
                if args.max_prompt_tokens and len(ids) > args.max_prompt_tokens:
                    ids = ids[:args.max_prompt_tokens]
                    text = post("/detokenize", {"tokens": ids})["content"]
                r = post("/completion", {
                    "prompt": ids,
                    "n_predict": args.steps,
                    "samplers": ["top_k"],
                    "top_k": 1,
                    "n_probs": TOP,
                    "post_sampling_probs": False,
                    "cache_prompt": False,
                    "return_tokens": True,
                })
                steps = [{
                    "id": p["id"],
                    "logprob": p["logprob"],
                    "top": [[t["id"], round(t["logprob"], 5)] for t in p["top_logprobs"]],
                } for p in r["completion_probabilities"]]
                greedy = [s["id"] for s in steps]
                # llama-server leaves out of completion_probabilities every token after which
                # the text ends inside a UTF-8 character (server-context.cpp, process_token:
                # no add_token while `incomplete`), so the steps after such a token would not
                # follow the tokens that were fed. Keep the steps before the first one.
                generated = r["tokens"]
                cut = next((i for i, (a, b) in enumerate(zip(greedy, generated)) if a != b),
                           min(len(greedy), len(generated)))
                if cut < len(greedy):
                    print(f"{kind}: token {generated[cut]} at step {cut} ends inside a UTF-8 "
                          f"character and has no probabilities: {len(greedy)} steps cut to {cut}",
                          file=sys.stderr)
                    steps, greedy = steps[:cut], greedy[:cut]
                    r["content"] = post("/detokenize", {"tokens": greedy})["content"]
                f.write(json.dumps({
                    "kind": kind,
                    "prompt": text,
                    "prompt_ids": ids,
                    "greedy_ids": greedy,
                    "greedy_text": r["content"],
                    "steps": steps,
                }) + "\n")
                print(f"{kind}: {len(ids)} prompt tokens, {len(greedy)} steps", file=sys.stderr)
        print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
