#!/usr/bin/env bash
# The runtime at the lowest versions pyproject.toml allows: a floor that was never installed is a guess.
#
#   1. constraints: every runtime dependency (and the onnx extra's onnxruntime) pinned to its floor, read from
#      pyproject.toml's `>=` (a floor must be a released version: `==floor` has to resolve)
#   2. a fresh venv ($CLIPEDGE_LOWEST_OUT/venv, default out/lowest/venv): `pip install -e '.[onnx]'` under those
#      constraints, plus pytest and jsonschema; transitive dependencies resolve as a user's would
#   3. the small test bundle, exported by the main .venv (the export needs TensorFlow, which the runtime never
#      imports), then the runtime's tests in the lowest venv against it ($CLIPEDGE_TEST_BUNDLE)
#
# Run after the main .venv exists (.ci/run makes it first). Exit status non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT=${CLIPEDGE_LOWEST_OUT:-out/lowest}
VENV=$OUT/venv
say() { printf '[lowest %s +%ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }

[ -x .venv/bin/python ] || { say "no .venv: run the README's test command (.ci/run) first" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"

python3 - pyproject.toml > "$OUT/constraints.txt" <<'EOF'
import re, sys, tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["onnx"]:
    found = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", requirement)
    if not found:
        sys.exit(f"{requirement!r} has no '>=' floor: every runtime dependency needs one")
    print(f"{found[1]}=={found[2]}")
EOF
say "constraints: $(tr '\n' ' ' < "$OUT/constraints.txt")"

python3 -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/pip" install -q --constraint "$OUT/constraints.txt" -e '.[onnx]' pytest jsonschema
"$VENV/bin/python" - "$OUT/constraints.txt" <<'EOF'
import sys
from importlib.metadata import version

def release(text):  # "10" == "10.0.0"
    parts = [int(p) for p in text.split("+")[0].split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return parts

wanted = dict(line.strip().split("==") for line in open(sys.argv[1]) if line.strip())
got = {name: version(name) for name in wanted}
print("[lowest] installed: " + ", ".join(f"{name} {v}" for name, v in got.items()))
wrong = {n: (wanted[n], got[n]) for n in wanted if release(got[n]) != release(wanted[n])}
sys.exit(f"not the floors: {wrong}" if wrong else 0)
EOF
say "lowest venv ready"

.venv/bin/python - "$OUT" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, ".")
from tests.conftest import make_hf_clip  # the same random checkpoint as the test suite's small_bundle
from clipedge.export.pipeline.export_bundle import export_bundle

out = Path(sys.argv[1])
(out / "checkpoint").mkdir()
_, checkpoint = make_hf_clip(out / "checkpoint")
export_bundle(out / "bundle", checkpoint=checkpoint, precisions=("fp32", "dynamic-int8"), progress=False)

# token ids at the latest ftfy and regex (where tests/runtime/test_tokenizer.py holds them to OpenCLIP's, id for id)
import json
import numpy as np
from clipedge.runtime.tokenizer import Tokenizer
from tests.runtime.test_tokenizer import CONTEXT, build_corpus

corpus = build_corpus()
(out / "corpus.json").write_text(json.dumps(corpus))
np.save(out / "ids.npy", Tokenizer.default()(corpus, context_length=CONTEXT))
EOF
say "test bundle exported, reference token ids written"

# The same ids at the lowest ftfy and regex (OpenCLIP's reference tokenizer itself needs torch, not installed here),
# on the texts whose characters this Python's Unicode database assigns: code points given a category only by a newer
# Unicode (the corpus draws random ones) follow each regex release's own tables, in OpenCLIP as here.
"$VENV/bin/python" - "$OUT" <<'EOF'
import json, sys, unicodedata
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from clipedge.runtime.tokenizer import Tokenizer
from tests.runtime.test_tokenizer import CONTEXT

out = Path(sys.argv[1])
corpus = json.loads((out / "corpus.json").read_text())
keep = [i for i, text in enumerate(corpus) if all(unicodedata.category(c) not in ("Cn", "Co", "Cs") for c in text)]
ids = Tokenizer.default()([corpus[i] for i in keep], context_length=CONTEXT)
rows = np.flatnonzero((ids != np.load(out / "ids.npy")[keep]).any(axis=1))
if len(rows):
    sys.exit(f"{len(rows)} of {len(keep)} texts tokenize differently at the lowest versions: {corpus[keep[rows[0]]]!r}")
print(f"[lowest] token ids of {len(keep)} texts (Unicode {unicodedata.unidata_version}) identical to the latest "
      "ftfy and regex")
EOF

# The runtime's tests that need no reference library (torch, transformers, open_clip) and no second venv.
CLIPEDGE_TEST_BUNDLE=$PWD/$OUT/bundle "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/runtime/test_backends.py tests/runtime/test_runner.py tests/runtime/test_bench.py \
    tests/runtime/test_datasets.py tests/runtime/test_cli_conveniences.py \
    tests/runtime/test_quiet.py tests/test_schemas.py
say "lowest-versions check passed in $((SECONDS - START))s"
