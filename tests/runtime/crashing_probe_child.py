"""A stand-in for clipedge.runtime.backends.probe_child that dies the way LiteRT's CompiledModel did on a truncated
model (SIGSEGV), so the tests can hold the crash path without depending on which damaged file crashes which LiteRT.

It crashes on the accelerators named in $CRASH_ON (comma-separated; default both) and probes for real on the others:
a GPU that cannot take a model, beside a CPU that can."""

import json
import os
import signal
import sys

if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    if request["accelerator"] in os.environ.get("CRASH_ON", "cpu,gpu").split(","):
        print("F0000 fake_interpreter.cc:1] Check failed: reading past the end of the model", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    from clipedge.runtime.backends.probe_child import _probe

    print(json.dumps(_probe(request)))
