#!/usr/bin/env python3
"""HTTP load generator for OpenAI-compatible servers (b3iqd, llama-cpp-python, vLLM, ...).

Sends --requests streaming chat completions, at most --concurrency at a time, all with the
same prompt and a fixed --max-tokens, using the official `openai` package (asyncio). Prints
one JSON object: aggregate completion tokens/s over the wall time, median and p90 time to
first token, request counts and errors.

    loadgen.py --base-url http://127.0.0.1:7420/v1 --api-key-file key.txt \
        --concurrency 4 --requests 8 --max-tokens 64 --model smollm2-135m-instruct-q4_1

The key is read from a file (or $OPENAI_API_KEY), never from argv. Completion tokens come from
the server's usage chunk (stream_options.include_usage) when it sends one, else from the
number of streamed content chunks (reported in "token_source").
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

DEFAULT_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True, help="API base including /v1")
    p.add_argument("--api-key-file", help="file holding the bearer key (else $OPENAI_API_KEY, else 'none')")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=0, help="total requests (default: = concurrency)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--no-usage", action="store_true", help="do not ask for stream usage (servers that reject stream_options)")
    return p.parse_args(argv)


def read_key(args):
    if args.api_key_file:
        with open(args.api_key_file) as f:
            return f.read().strip()
    return os.environ.get("OPENAI_API_KEY", "none")


async def one(client, args, results):
    t0 = time.perf_counter()
    ttft = None
    chunks = 0
    usage_tokens = None
    kwargs = dict(
        model=args.model,
        messages=[{"role": "user", "content": args.prompt}],
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        stream=True,
    )
    if not args.no_usage:
        kwargs["stream_options"] = {"include_usage": True}
    try:
        stream = await client.chat.completions.create(**kwargs)
        async for ev in stream:
            if getattr(ev, "usage", None) is not None and ev.usage.completion_tokens is not None:
                usage_tokens = ev.usage.completion_tokens
            for ch in ev.choices or []:
                if ch.delta is not None and ch.delta.content:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    chunks += 1
        results.append({"ok": True, "ttft": ttft, "tokens": usage_tokens if usage_tokens is not None else chunks,
                        "from_usage": usage_tokens is not None, "seconds": time.perf_counter() - t0})
    except Exception as e:  # noqa: BLE001 - report every failure kind
        results.append({"ok": False, "error": f"{type(e).__name__}: {e}"[:300]})


async def run(args):
    import openai  # imported here so --help works without it

    total = args.requests or args.concurrency
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=read_key(args), timeout=args.timeout, max_retries=0)
    sem = asyncio.Semaphore(args.concurrency)
    results = []

    async def guarded():
        async with sem:
            await one(client, args, results)

    t0 = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(total)))
    wall = time.perf_counter() - t0
    await client.close()
    ok = [r for r in results if r["ok"]]
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in ok)
    out = {
        "base_url": args.base_url,
        "model": args.model,
        "concurrency": args.concurrency,
        "requests": total,
        "ok": len(ok),
        "errors": [r["error"] for r in results if not r["ok"]][:5],
        "max_tokens": args.max_tokens,
        "completion_tokens": tokens,
        "token_source": "usage" if ok and all(r["from_usage"] for r in ok) else "chunks",
        "wall_seconds": round(wall, 4),
        "aggregate_tokens_per_second": round(tokens / wall, 3) if wall > 0 else 0.0,
        "median_ttft_ms": round(statistics.median(ttfts) * 1000, 2) if ttfts else None,
        "p90_ttft_ms": round(ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.9))] * 1000, 2) if ttfts else None,
    }
    print(json.dumps(out))
    return 0 if len(ok) == total else 1


def main(argv=None):
    args = parse_args(argv)
    if args.concurrency < 1 or args.max_tokens < 1:
        print("loadgen: --concurrency and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
