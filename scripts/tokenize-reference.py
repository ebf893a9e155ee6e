#!/usr/bin/env python3
"""Make a tests/reference/tokenize-MODEL.jsonl fixture from llama.cpp's tokenizer.

    python3 scripts/tokenize-reference.py MODEL.gguf OUT.jsonl [--texts-from FIXTURE.jsonl]
        [--spm-extras] [--server PATH] [--port N]

Starts llama-server on MODEL.gguf (one thread, small context), sends every text to its
`POST /tokenize` with `{"add_special": false, "parse_special": true}` (control tokens written in
the text become their ids, nothing such as BOS is prepended), writes one `{"text", "ids"}` line
per text to OUT.jsonl and stops the server. The texts are those of an existing fixture
(`--texts-from`, in its order) followed, with `--spm-extras`, by the SentencePiece edge cases
below. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llama_server import LlamaServer

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("FASTGEN_HOME", Path.home() / ".cache" / "fastgen"))

# SentencePiece (tokenizer.ggml.model = llama) edge cases: whitespace that becomes U+2581 or
# matches Gemma's user-defined whitespace tokens, byte fallback, turn markup, literal U+2581.
SPM_EXTRAS = [
    " leading space",
    "trailing space ",
    "   three leading, two trailing  ",
    " ",
    "  ",
    "a b  c   d    e     f                    g",
    "\ttab\t\ttabs\t\t\tthree\n",
    "line one\nline two\r\nline three\n\n\nafter three newlines\n",
    "\n\n\nstarts with newlines",
    " \n \t mixed \t\n whitespace \n\t ",
    "rare CJK 𠜎𠜱𠝹𠱓 and 龘 and 乂",
    "new emoji 🦩🪿🫠🧌 and flags 🇫🇷🇯🇵 and zwj 👩‍💻",
    "control chars \u0001\u0007\u001b[0m\u007f end",
    "zero\u200bwidth and\u00a0nbsp and soft\u00adhyphen",
    "math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q and combining e\u0301 vs \u00e9",
    "literal \u2581 lower one eighth block \u2581\u2581 twice",
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask>[multimodal]<unused0><unused6241><start_of_image><end_of_image>",
    "incomplete markup <start_of_turn <end_of_turn> <unused <unused99",
    "<table><tr><td>cell</td></tr></table> with <b>bold</b>, <em>em</em> and <code>x</code>",
    "   <start_of_turn>  spaces around a control token  <end_of_turn>   ",
]


def essay_excerpt(limit: int = 4000) -> str | None:
    """The first lines of the pinned essay worked.txt (hard-wrapped, without blank lines), up
    to `limit` characters and cut at a line end; None when the essay is not fetched."""
    path = HOME / "data" / "essays" / "worked.txt"
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")[:limit]
    return text[: text.rindex("\n")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="GGUF file")
    ap.add_argument("out", type=Path, help="JSONL file to write")
    ap.add_argument("--texts-from", type=Path, help="fixture whose texts to reuse")
    ap.add_argument("--spm-extras", action="store_true", help="add the SentencePiece cases")
    ap.add_argument("--server", type=Path, default=HOME / "llama.cpp" / "bin" / "llama-server")
    ap.add_argument("--port", type=int, default=18092)
    a = ap.parse_args()

    texts: list[str] = []
    if a.texts_from:
        for line in a.texts_from.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    if a.spm_extras:
        texts.extend(SPM_EXTRAS)
        excerpt = essay_excerpt()
        if excerpt is None:
            sys.exit(f"{HOME}/data/essays/worked.txt missing: `fastgen fetch essays` first")
        texts.append(excerpt)
    if not texts:
        sys.exit("no texts: give --texts-from and/or --spm-extras")

    with LlamaServer(a.server, a.model, a.port, ["-t", "1", "-c", "512"]) as server:
        with a.out.open("w", encoding="utf-8") as out:
            for text in texts:
                body = {"content": text, "add_special": False, "parse_special": True}
                ids = server.post("/tokenize", body)["tokens"]
                out.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"{a.out}: {len(texts)} lines")


if __name__ == "__main__":
    main()
