"""Scoring throughput against an OpenAI-compatible endpoint as concurrency grows: a local test server that
answers every chat-completions request after a fixed latency (as a remote model would), scored through moex's
own path (``OpenAIChat`` + the detection scorer, one example per prompt), at concurrency 1, 2, 4, 8 and 16.

    python benchmarks/llm_concurrency.py --latency 0.2 --out benchmarks/results/llm_concurrency.json

With a fixed latency L and c requests in flight, prompts per second should approach c / L: the ratio against
concurrency 1, measured in the same run, is printed for each level.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from moex.autointerp.examples import FeatureExamples, Window
from moex.autointerp.llm import LLMConfig, OpenAIChat
from moex.autointerp.scoring import detection


def serve(latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            n = body["messages"][-1]["content"].count("Example")
            time.sleep(latency)
            reply = json.dumps({"choices": [{"message": {"content": str([1] * max(1, n))}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args()
    server = serve(args.latency)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rng = np.random.default_rng(0)
    windows = [Window(i, rng.integers(0, 50, 16), np.ones(16), 0) for i in range(args.prompts)]
    ex = FeatureExamples(0, [], windows[: args.prompts // 2], windows[args.prompts // 2:])
    rows = []
    for c in (1, 2, 4, 8, 16):
        llm = OpenAIChat(url, "test", cfg=LLMConfig(retries=0))  # no disk cache: every prompt is asked
        t = time.perf_counter()
        answers, _ = detection(llm, "anything", ex, lambda t: f" t{t}", per_prompt=1, concurrency=c)
        dt = time.perf_counter() - t
        assert len(answers) == args.prompts and all(a.prediction == 1 for a in answers)
        rows.append({"concurrency": c, "seconds": dt, "prompts_per_s": args.prompts / dt})
    for r in rows:
        r["vs_concurrency_1"] = r["prompts_per_s"] / rows[0]["prompts_per_s"]
        print(f"concurrency {r['concurrency']:>2}: {r['prompts_per_s']:6.1f} prompts/s ({r['vs_concurrency_1']:.2f}x)")
    server.shutdown()
    if args.out:
        Path(args.out).write_text(json.dumps({"latency_s": args.latency, "prompts": args.prompts, "rows": rows},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
