#!/usr/bin/env bash
# Runs INSIDE the arm64 Debian bookworm chroot (started by .ci/arm64/check.sh), as a Raspberry Pi user would.
#   inside.sh install        fresh venv without system site-packages, `pip install .` (no extras), footprint,
#                            pytest into its own --target directory (never into the runtime venv)
#   inside.sh test PROFILE   the runtime tests, under the emulated CPU that check.sh set up for PROFILE
set -euo pipefail
CHECK=/opt/clipedge-check
VENV=$CHECK/venv
SRC=$CHECK/src
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off PIP_NO_INPUT=1
ulimit -c 0  # a native crash under qemu would otherwise leave a core file of ~150 MB in the rootfs
say() { printf '[arm64 chroot %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
golden() { python3 -c "import json,sys; m=json.load(open('$CHECK/golden.json')); print($1)"; }

case "${1:-}" in
install)
    say "$(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version), QEMU_CPU=${QEMU_CPU:-max}"
    t=$SECONDS
    python3 -m venv "$VENV"
    (cd "$SRC" && "$VENV/bin/pip" install -q .)
    say "python3 -m venv + pip install . took $((SECONDS - t))s"
    "$VENV/bin/pip" list --format=freeze > "$CHECK/pip-freeze.txt"
    say "installed: $(tr '\n' ' ' < "$CHECK/pip-freeze.txt")"

    # The footprint is measured before pytest exists anywhere.
    BUNDLE=$CHECK/bundles/$(golden '"demo" if "demo" in m["bundles"] else "small"')
    IMAGE=$CHECK/inputs/$(golden 'm["photos"][0]')
    PRECISIONS=$(golden '",".join(p for p in m["precisions"] if p in ("fp32", "dynamic-int8"))')
    t=$SECONDS
    "$VENV/bin/python" "$SRC/.ci/arm64/footprint.py" --venv "$VENV" --bundle "$BUNDLE" --image "$IMAGE" \
        --precisions "$PRECISIONS" --out "$CHECK/footprint.json" --label "arm64-bookworm-qemu-${QEMU_CPU:-max}" \
        > /dev/null
    say "footprint took $((SECONDS - t))s"

    # The photo library's extras (issue #35), after the footprint of the runtime alone: they must install on arm64
    # Debian from their aarch64 wheels (usearch for large indexes, pillow-heif for HEIC).
    t=$SECONDS
    (cd "$SRC" && "$VENV/bin/pip" install -q ".[index,heif]")
    say "pip install '.[index,heif]' took $((SECONDS - t))s"

    t=$SECONDS
    "$VENV/bin/pip" install -q --target "$CHECK/pytest-lib" pytest
    say "pytest (separate --target dir, not in the runtime venv) took $((SECONDS - t))s"
    ;;
test)
    PROFILE=$2
    say "tests as $PROFILE (QEMU_CPU=${QEMU_CPU:-max}; $(grep -m1 '^Features' /proc/cpuinfo))"
    t=$SECONDS
    cd "$CHECK"
    rc=0
    CLIPEDGE_ARM64_WORK=$CHECK CLIPEDGE_ARM64_VENV=$VENV CLIPEDGE_ARM64_PROFILE=$PROFILE \
        PYTHONPATH=$CHECK/pytest-lib "$VENV/bin/python" -m pytest -p no:cacheprovider -rA \
        --junitxml="$CHECK/junit-$PROFILE.xml" -o junit_suite_name="arm64-$PROFILE" \
        --rootdir "$SRC/.ci/arm64" -c /dev/null "$SRC/.ci/arm64/test_runtime_arm64.py" || rc=$?
    say "tests as $PROFILE took $((SECONDS - t))s (exit $rc)"
    exit "$rc"
    ;;
*)
    echo "usage: inside.sh install | test PROFILE" >&2
    exit 2
    ;;
esac
