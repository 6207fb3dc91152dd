"""OpenAI-compatible endpoints that misbehave on purpose, served by a local test server that each test
starts: every malformed reply is retried and then one error naming the URL and what came back; the reply
cache is keyed by the endpoint."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moex.autointerp.llm import LLMConfig, LLMError, OpenAIChat, load_llm
from moex.cli import main
from moex.config import ConfigError

MSGS = [{"role": "user", "content": "hi"}]
FAST = LLMConfig(timeout=0.5, retries=1)


def ok_body(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


class Server:
    """A chat-completions server on localhost whose reply is ``respond(n)`` for the n-th request (bytes, or
    None to say nothing and hang up after ``hang`` seconds)."""

    def __init__(self, respond, raw: bool = False, hang: float = 0.0, port: int = 0):
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                body = respond(outer.calls)
                if body is None:
                    time.sleep(hang)
                    return
                if raw:  # bytes straight onto the socket: not HTTP
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.server_close()


@pytest.mark.parametrize("body,raw,message", [
    (b"<html>Bad gateway</html>", False, "a body that is not JSON: '<html>Bad gateway</html>'"),
    (b'{"choices": [{"message": {"content": "trunc', False, "a body that is not JSON"),
    (b'{"error": "overloaded"}', False, "JSON without choices[0].message.content"),
    (b'{"choices": []}', False, "JSON without choices[0].message.content"),
    (b"GARBAGE\r\n\r\n", True, "a reply that is not HTTP"),
])
def test_malformed_replies_are_retried_then_one_error_naming_the_url(body, raw, message):
    with Server(lambda n: body, raw=raw) as srv:
        with pytest.raises(LLMError) as e:
            OpenAIChat(srv.url, "m", cfg=FAST).complete(MSGS)
        assert srv.calls == 2  # one try + one retry
    text = str(e.value)
    assert text.startswith(f"{srv.url}/chat/completions: ") and message in text and "after 2 tries" in text
    assert "\n" not in text


def test_a_malformed_reply_then_a_good_one_succeeds():
    with Server(lambda n: b"not json" if n == 1 else ok_body("fine")) as srv:
        assert OpenAIChat(srv.url, "m", cfg=FAST).complete(MSGS) == "fine" and srv.calls == 2


def test_a_server_that_never_answers_is_given_up_on_after_the_timeout():
    with Server(lambda n: None, hang=3.0) as srv:
        t0 = time.monotonic()
        with pytest.raises(LLMError, match=r"no answer within 0.5 s \(after 2 tries\)"):
            OpenAIChat(srv.url, "m", cfg=FAST).complete(MSGS)
        assert time.monotonic() - t0 < 2.9  # 2 x 0.5 s + 1 s backoff, not the server's 3 s per request


def test_the_reply_cache_is_keyed_by_the_endpoint(tmp_path):
    with Server(lambda n: ok_body("from A")) as a, Server(lambda n: ok_body("from B")) as b:
        llm_a = OpenAIChat(a.url, "same-model", cache_dir=tmp_path, cfg=FAST)
        llm_b = OpenAIChat(b.url, "same-model", cache_dir=tmp_path, cfg=FAST)
        assert llm_a.complete(MSGS) == "from A" and llm_b.complete(MSGS) == "from B"
        assert llm_a.complete(MSGS) == "from A" and (a.calls, b.calls) == (1, 1)  # the rerun hits the cache
        saved = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
        assert sorted(s["url"] for s in saved) == sorted([f"{a.url}/chat/completions", f"{b.url}/chat/completions"])


def test_llm_settings_are_checked_and_reach_the_backend():
    llm = load_llm("openai:http://127.0.0.1:9/v1:m", cfg=LLMConfig(timeout=7, retries=0, max_reply_tokens=50))
    assert (llm.timeout, llm.retries, llm.max_tokens) == (7, 0, 50)
    with pytest.raises(ConfigError, match="timeout"):
        LLMConfig(timeout=0)


def test_cli_autointerp_reports_an_endpoint_error_in_one_line(tmp_path, capsys):
    pytest.importorskip("tiktoken")
    import torch

    from moex import GPT, make_config

    torch.manual_seed(0)
    GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64)).save_pretrained(tmp_path / "run")
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 300)
    with Server(lambda n: b'{"error": "no"}') as srv:
        rc = main(["autointerp", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "t.txt"),
                   "--llm", f"openai:{srv.url}:m", "--out", str(tmp_path / "o"), "--layer", "0", "--features", "2",
                   "window=16", "n_explain=4", "per_decile=1", "n_deciles=2", "n_negative=4", "timeout=0.5",
                   "retries=0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert rc == 2 and err.startswith("moex: error: http://127.0.0.1:") and "JSON without choices" in err, err
    assert err.endswith("(after 1 try)")


def test_a_feature_with_no_readable_answer_is_not_scored(tmp_path):
    """Served by a local endpoint: explanations in format, every scoring reply in prose."""
    pytest.importorskip("tiktoken")
    import torch

    from moex import GPT, make_config
    from moex.autointerp.pipeline import AutointerpConfig, format_summary, run_autointerp

    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64))
    (tmp_path / "t.txt").write_text("the cat sat on the mat. a dog ran far away. " * 200)
    cfg = AutointerpConfig(window=16, n_explain=4, per_decile=1, n_deciles=2, n_negative=4, scorer="list")
    with Server(lambda n: ok_body("[EXPLANATION]: the word cat") if n <= 1 else ok_body("I cannot tell.")) as srv:
        llm = load_llm(f"openai:{srv.url}:m", cache_dir=tmp_path / "cache", cfg=FAST)
        s = run_autointerp(model, [str(tmp_path / "t.txt")], tmp_path / "o", llm, layer=0, feature_ids=[3],
                           cfg=cfg, progress=False)
    assert s["features_scored"] == 1 and s["per_feature"][0]["detection_accuracy"] is None
    assert s["detection"]["accuracy"] is None and s["detection"]["failed"] > 0
    assert "not scored (" in format_summary(s) and "0.000" not in format_summary(s).split("| feature |")[1]
    # the token baseline needs no LLM: it is scored on the same windows whatever the endpoint replied
    assert s["token_baseline"]["detection"]["n"] == s["detection"]["failed"]
    assert "| detection, token baseline (no LLM) |" in format_summary(s)


def test_a_run_stopped_by_a_failing_endpoint_continues_where_it_stopped(tmp_path):
    """The endpoint answers the first feature's requests, then only garbage: the run stops with one error and the
    finished feature kept; rerun against the endpoint (back up, same URL), it reads that feature back and asks
    only for the other."""
    pytest.importorskip("tiktoken")
    import torch

    from moex import GPT, MoexError, make_config
    from moex.autointerp.pipeline import AutointerpConfig, run_autointerp

    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64))
    (tmp_path / "t.txt").write_text("the cat sat on the mat. a dog ran far away. " * 200)
    cfg = AutointerpConfig(window=16, n_explain=4, per_decile=1, n_deciles=2, n_negative=4, scorer="list")
    reply = ok_body("[EXPLANATION]: the word cat\n[1, 1, 0, 0, 1]")
    with Server(lambda n: reply if n <= 5 else b"not json") as down:
        llm = load_llm(f"openai:{down.url}:m", cache_dir=tmp_path / "cache", cfg=FAST)
        with pytest.raises(MoexError):
            run_autointerp(model, [str(tmp_path / "t.txt")], tmp_path / "o", llm, layer=0, feature_ids=[3, 5],
                           cfg=cfg, progress=False)
        port = down.httpd.server_port
    assert (tmp_path / "o" / "features" / "3.json").exists() and not (tmp_path / "o" / "features" / "5.json").exists()
    with Server(lambda n: reply, port=port) as up:
        llm = load_llm(f"openai:{up.url}:m", cache_dir=tmp_path / "cache", cfg=FAST)
        s = run_autointerp(model, [str(tmp_path / "t.txt")], tmp_path / "o", llm, layer=0, feature_ids=[3, 5],
                           cfg=cfg, progress=False)
    assert s["features_scored"] == 2 and s["features_resumed"] == 1 and up.calls == 5
    assert s["detection"]["n"] + s["detection"]["failed"] == 2 * 6


def logprob_body(one: float, zero: float) -> bytes:
    top = [{"token": " 1", "logprob": one}, {"token": "0", "logprob": zero}, {"token": "yes", "logprob": -9.0}]
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "1"},
                                    "logprobs": {"content": [{"token": "1", "logprob": one, "top_logprobs": top}]}}]
                      }).encode()


def test_log_probability_scoring_from_an_endpoint_that_returns_top_logprobs(tmp_path):
    """With logprobs=true the scorer asks for one token and reads P("1") / (P("1") + P("0")) from its
    top_logprobs (hand-computed), the AUC appears beside accuracy; without the setting it stays with 0/1 lists;
    a body without logprobs is one error naming what is missing."""
    import math

    from moex.autointerp.examples import FeatureExamples, Window
    from moex.autointerp.metrics import binary_metrics
    from moex.autointerp.scoring import detection, scoring_mode

    with Server(lambda n: logprob_body(-0.2, -1.9)) as srv:
        llm = load_llm(f"openai:{srv.url}:m", cfg=LLMConfig(logprobs=True, retries=0))
        p = llm.yes_probability(MSGS)
        assert p == pytest.approx(math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.9)))
        assert scoring_mode(llm) == "probability"
        assert scoring_mode(load_llm(f"openai:{srv.url}:m")) == "list"
    # a judge whose P("1") follows the label: AUC 1 even where every probability is above one half
    ex = FeatureExamples(0, [], [Window(i, [1, 2], [1.0, 0.0], 0) for i in range(4)],
                         [Window(10 + i, [3, 4], [0.0, 0.0], -1) for i in range(4)])

    class Graded(OpenAIChat):
        def _request(self, body, read):
            text = body["messages"][-1]["content"]
            return read(logprob_body(-0.1, -3.0) if "t1" in text else logprob_body(-0.5, -1.0))

    judge = Graded("http://127.0.0.1:9/v1", "m", cfg=LLMConfig(logprobs=True))
    answers, _ = detection(judge, "x", ex, lambda t: f" t{t}", mode=scoring_mode(judge))
    m = binary_metrics(answers)
    assert m["auc"] == 1.0 and m["yes_rate"] == 1.0 and m["balanced_accuracy"] == 0.5
    with Server(lambda n: ok_body("1")) as srv:
        with pytest.raises(LLMError, match="without choices\\[0\\].logprobs"):
            load_llm(f"openai:{srv.url}:m", cfg=LLMConfig(logprobs=True, retries=0)).yes_probability(MSGS)


def test_cli_judge_check_of_an_endpoint(tmp_path, capsys):
    """``moex autointerp judge``: an endpoint that says yes to everything fails the check (exit 0, the verdict
    printed and saved); with --require-judge the same is one error line and exit 2."""
    pytest.importorskip("tiktoken")
    from conftest import WIKI_VALID

    def yes(n):
        return ok_body(str([1] * 5))

    args = ["autointerp", "judge", "scorer=list", "--data", str(WIKI_VALID),
            "--out", str(tmp_path / "j")]
    with Server(yes) as srv:
        assert main([*args, "--llm", f"openai:{srv.url}:m"]) == 0
        assert "judge check FAILED" in capsys.readouterr().out
        check = json.loads((tmp_path / "j" / "judge_check.json").read_text())
        assert check["negative_yes_rate"] == 1.0 and not check["passed"] and srv.calls == 4 * 2 * 4
        assert main([*args, "--llm", f"openai:{srv.url}:m", "--require-judge"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("moex: error: judge check FAILED") and err.count("\n") == 1 and srv.calls == 32
    assert main(["autointerp", "judge", "--llm", "openai:http://127.0.0.1:9/v1:m"]) == 2
    assert "usage: moex autointerp judge" in capsys.readouterr().err


def test_a_reply_without_1_or_0_among_its_logprobs_is_one_unreadable_answer():
    """A well-formed reply whose top log-probabilities hold neither "1" nor "0" (as llama.cpp's server sends
    for a judge that starts with another token) is counted unreadable, asked once, never retried."""
    from moex.autointerp.examples import FeatureExamples, Window
    from moex.autointerp.scoring import detection

    other = json.dumps({"choices": [{"message": {"role": "assistant", "content": "The"}, "logprobs": {"content": [
        {"token": "The", "logprob": -0.1, "top_logprobs": [{"token": "The", "logprob": -0.1}]}]}}]}).encode()
    ex = FeatureExamples(0, [], [Window(i, [1, 2], [1.0, 0.0], 0) for i in range(3)],
                         [Window(10 + i, [3, 4], [0.0, 0.0], -1) for i in range(3)])
    with Server(lambda n: logprob_body(-0.2, -1.9) if n % 2 else other) as srv:
        llm = load_llm(f"openai:{srv.url}:m", cfg=LLMConfig(logprobs=True, retries=3))
        answers, failures = detection(llm, "x", ex, lambda t: f" t{t}", mode="probability", concurrency=1)
        assert srv.calls == 6  # one request per example: the unusable replies were not retried
    assert sum(a.prediction is None for a in answers) == 3 and sum(failures.values()) == 3


def test_an_endpoint_that_stops_answering_is_given_up_on_within_retries_times_timeout():
    """Requests queued behind one that exhausted its retries fail at once: 24 prompts at concurrency 4 against a
    server that never answers end after about (retries + 1) x timeout + backoff (here 2 x 1 s + 1 s), not
    after every queued request has run its own retries (6 rounds of that, about 18 s)."""
    from moex.autointerp.examples import FeatureExamples, Window
    from moex.autointerp.scoring import detection

    ex = FeatureExamples(0, [], [Window(i, [1, 2], [1.0, 0.0], 0) for i in range(12)],
                         [Window(20 + i, [3, 4], [0.0, 0.0], -1) for i in range(12)])
    with Server(lambda n: None, hang=5) as srv:
        llm = load_llm(f"openai:{srv.url}:m", cfg=LLMConfig(timeout=1.0, retries=1))
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match="no answer within 1 s"):
            detection(llm, "x", ex, lambda t: f" t{t}", per_prompt=1, concurrency=4)
        elapsed = time.perf_counter() - t0
    assert elapsed < 2 * (2 * 1.0 + 1.0), elapsed  # within twice one round of retries
