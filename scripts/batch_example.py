"""A batch through the gateway with the official ``openai`` client: upload, create, wait, read the output.

``make run`` prints the command line. Each of ``--lines`` chat requests gets a ``custom_id``; the output file has
one answer per id (the error file, if any, the lines that failed).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import openai


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8001/v1")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)

    requests = [
        {
            "custom_id": f"request-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": args.model,
                "messages": [{"role": "user", "content": f"Say hello #{n}"}],
                "max_tokens": 16,
            },
        }
        for n in range(1, args.lines + 1)
    ]
    content = "".join(json.dumps(r) + "\n" for r in requests).encode()
    uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch")
    print(f"uploaded {uploaded.id} ({uploaded.bytes} bytes)")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    print(f"created {batch.id}: {batch.status}")
    deadline = time.monotonic() + args.timeout
    while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
        counts = batch.request_counts
        print(f"  {batch.status}: {counts.completed if counts else 0}/{counts.total if counts else 0}")
    if batch.status != "completed" or batch.output_file_id is None:
        print(f"the batch ended {batch.status}: {batch.errors}", file=sys.stderr)
        return 1
    for raw in client.files.content(batch.output_file_id).text.splitlines():
        line = json.loads(raw)
        answer = line["response"]["body"]["choices"][0]["message"]["content"]
        print(f"{line['custom_id']}: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
