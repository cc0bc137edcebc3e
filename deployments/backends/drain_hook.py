"""The model container's ``preStop`` hook: wait for the gateways to stop sending, then for in-flight work to finish.

Kubernetes runs the hook before SIGTERM and counts it against the grace period. It first sleeps while the
terminating pod leaves the Service's endpoints and the gateways load a snapshot without a removed revision
(``propagation_s``), then polls the runtime's own ``/metrics`` until its in-flight gauges (running and queued
requests) read zero, for at most ``deadline_s`` (the deployment's request timeout: a request older than that has
been given up by the gateway). SIGTERM then finds the server idle, so no stream is cut, whatever the runtime does
with requests still in flight when it is told to stop (vLLM aborts them).

The hook is a short Python program passed to ``python3 -c`` (every runtime's official image has one) by a POSIX
shell line that falls back to sleeping the propagation time in images without Python. Metrics that cannot be read
(the server already stopped, a runtime without the gauges) end the wait at once: the hook never holds a pod for
nothing.
"""

from __future__ import annotations

from deployments.backends.load_metrics import load_of

# argv: propagation seconds, deadline seconds, metrics URL, gauge names...
DRAIN_PROGRAM = """\
import sys, time, urllib.request
wait, deadline, url, names = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], set(sys.argv[4:])
time.sleep(wait)
end = time.monotonic() + deadline
while time.monotonic() < end:
    try:
        busy = 0.0
        for line in urllib.request.urlopen(url, timeout=2).read().decode().splitlines():
            name = line.split("{")[0].split(" ")[0]
            if line and not line.startswith("#") and name in names:
                busy += float((line.rpartition("}")[2] if "{" in line else line[len(name):]).split()[0])
    except Exception:
        break
    if busy <= 0:
        break
    time.sleep(1)
"""

SHELL_LINE = 'p="$1"; shift; if command -v python3 >/dev/null 2>&1; then exec python3 -c "$p" "$@"; fi; exec sleep "$1"'


def drain_command(runtime: str, propagation_s: int, deadline_s: int) -> list[str]:
    """The hook's ``exec.command`` for ``runtime``'s container."""
    load = load_of(runtime)
    port, gauges = load.port, load.gauges
    url = f"http://127.0.0.1:{port}/metrics"
    return [
        "/bin/sh",
        "-c",
        SHELL_LINE,
        "frontdoor-drain",
        DRAIN_PROGRAM,
        str(propagation_s),
        str(deadline_s),
        url,
        *gauges,
    ]
