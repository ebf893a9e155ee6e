#!/usr/bin/env python3
"""Tables of docs/fastgen/BEYOND.md from kv_fidelity's JSON lines (one file per model and text).

Baselines are matched to each FastGen arm's kept share at the end of decoding by linear
interpolation on the `curve:` grid (window and h2o at 13 budgets each); arms run with
their own exact baselines (`window@ARM`, `h2o@ARM`) are shown as measured.

usage: tables.py FILE... [--arms a,b] [--bar ARM]
"""
import json, sys

def load(path):
    rows = []
    for line in open(path):
        if line.startswith("JSON "):
            rows.append(json.loads(line[5:]))
    return rows

def interp(curve, kept):
    """KLD of a baseline at `kept` (share), linear between the two grid points around it."""
    pts = sorted(((1 - r["pruned"], r["kld"]) for r in curve))
    if kept <= pts[0][0]:
        return None if pts[0][0] - kept > 0.01 else pts[0][1]
    for (k0, v0), (k1, v1) in zip(pts, pts[1:]):
        if k0 <= kept <= k1:
            return v0 + (v1 - v0) * (kept - k0) / (k1 - k0) if k1 > k0 else v0
    return None if kept - pts[-1][0] > 0.01 else pts[-1][1]

def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    only = opts.get("arms", "").split(",") if "arms" in opts else None
    print("| model | text | T | arm | pruned | KLD | window KLD | h2o KLD | wins |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = {}
    for path in args:
        for r in load(path):
            groups.setdefault((r["model"], r["text"]), []).append(r)
    for rows in groups.values():
        win = [r for r in rows if r["arm"] == "curve:window"]
        h2o = [r for r in rows if r["arm"] == "curve:h2o"]
        for r in rows:
            a = r["arm"].strip()
            if a.startswith("curve") or "@" in a or (only and a not in only):
                continue
            kept = 1 - r["pruned"]
            w, h = interp(win, kept), interp(h2o, kept)
            ok = "?" if w is None or h is None else ("yes" if r["kld"] <= min(w, h) else "no")
            f = lambda v: "n/a" if v is None else f"{v:.5f}"
            print(f"| {r['model']} | {r['text']} | {r['t']} | {a} | {100 * r['pruned']:.1f}% "
                  f"| {r['kld']:.5f} | {f(w)} | {f(h)} | {ok} |")


def bar(paths):
    """The bar: paper and default side by side, baselines matched exactly to the default
    (window@default, h2o@default) and by interpolation to the paper."""
    groups = {}
    for path in paths:
        for r in load(path):
            groups.setdefault((r["model"], r["text"]), []).append(r)
    print("| model | text | T | paper pruned | paper KLD | window / h2o at paper's budget "
          "| default pruned | default KLD | window at same budget | h2o at same budget | bar |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v: "n/a" if v is None else f"{v:.5f}"
    for (m, t), rows in groups.items():
        win = [r for r in rows if r["arm"] == "curve:window"]
        h2o = [r for r in rows if r["arm"] == "curve:h2o"]
        for T in sorted({r["t"] for r in rows if r["t"] > 0}):
            at = {r["arm"].strip(): r for r in rows if r["t"] == T}
            p, d = at.get("paper"), at.get("default")
            if not d:
                continue
            w, h = at.get("window@default"), at.get("h2o@default")
            if not (w and h):
                continue
            best = min(w["kld"], h["kld"])
            ok = "met" if d["kld"] <= best else "not met"
            pw = interp(win, 1 - p["pruned"]) if p else None
            ph = interp(h2o, 1 - p["pruned"]) if p else None
            ps = f"{100 * p['pruned']:.1f}% | {p['kld']:.5f} | {f(pw)} / {f(ph)}" if p else "| |"
            print(f"| {m} | {t} | {T} | {ps} | {100 * d['pruned']:.1f}% | {d['kld']:.5f} "
                  f"| {w['kld']:.5f} ({100 * w['pruned']:.1f}%) | {h['kld']:.5f} ({100 * h['pruned']:.1f}%) | {ok} |")

if "--bar" in sys.argv:
    bar([a for a in sys.argv[1:] if not a.startswith("--")])
    sys.exit(0)

main()
