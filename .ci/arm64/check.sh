#!/usr/bin/env bash
# The runtime on arm64 Debian bookworm (what Raspberry Pi OS 64-bit is built on), under qemu user-mode emulation.
#
#   1. host tools: qemu-user-static, debootstrap, binfmt-support (apt-get, once); the qemu-aarch64 binfmt enabled
#   2. rootfs: debootstrap arm64 minbase bookworm + python3, python3-venv, python3-pip, cached at
#      $CLIPEDGE_ARM64_CACHE/arm64-bookworm (default /var/cache/clipedge), keyed by a stamp; rebuilt when the stamp
#      differs or its python3 does not run
#   3. x86 (this venv, export + test extras): export small TFLite bundles, write the x86 runtime's golden outputs
#   4. the working tree (git's tracked + untracked-not-ignored files) copied into the rootfs; inside the chroot a
#      fresh venv, `pip install .` with no extras (exactly a Pi user's install), footprint, then pytest from a
#      separate --target dir running .ci/arm64/test_runtime_arm64.py once per Pi profile (CLIPEDGE_ARM64_PROFILES,
#      default "pi5 pi4"): pi5 emulates a Cortex-A76 (Raspberry Pi 5), pi4 a Cortex-A72 (Raspberry Pi 4), each
#      with QEMU_CPU and a matching /proc/cpuinfo
#   5. results in $CLIPEDGE_ARM64_OUT (default <repo>/out/arm64): footprint.json, hygiene-*.json, junit-*.xml, logs
#
# Needs root (debootstrap, chroot, mount). Mounts are undone on exit, failure included. Exit status: non-zero on
# any failure. CLIPEDGE_DEBIAN_MIRROR overrides the mirror read from apt's sources.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SUITE=bookworm
CACHE=${CLIPEDGE_ARM64_CACHE:-/var/cache/clipedge}
ROOTFS=$CACHE/arm64-$SUITE
STAMP="clipedge arm64 rootfs v1: debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip $SUITE"
OUT=${CLIPEDGE_ARM64_OUT:-$REPO/out/arm64}
CHECK=/opt/clipedge-check            # inside the rootfs
WORK=$ROOTFS$CHECK                   # the same directory seen from the host
START=$SECONDS
MOUNTS=()

say() { printf '[arm64 %s +%ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

mounted_under() {  # mount points at or below $1, deepest first
    awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
    done
    for i in $(mounted_under "$ROOTFS"); do umount -l "$i"; done
    if [ "$rc" -eq 0 ]; then say "arm64 check passed in $((SECONDS - START))s"
    else say "arm64 check FAILED (exit $rc) after $((SECONDS - START))s; logs in $OUT" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${CLIPEDGE_SKIP_ARM64:-}" = 1 ]; then
    say "SKIPPED: CLIPEDGE_SKIP_ARM64=1 (the arm64 runtime check did not run)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount); CI runs as root"
[ "$(uname -m)" = x86_64 ] || die "expects an x86_64 host (it emulates arm64), this is $(uname -m)"
mkdir -p "$CACHE" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.xml "$OUT"/*.txt
exec 9>"$CACHE/arm64.lock"
flock -w 3600 9 || die "another arm64 check holds $CACHE/arm64.lock"

# ---- 1. host tools -----------------------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } \
        > "$OUT/apt.log" 2>&1 || { tail -30 "$OUT/apt.log"; die "apt-get install ${need[*]}"; }
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is not enabled"

# ---- 2. the arm64 rootfs -----------------------------------------------------------------------------------------
debian_mirror() {  # the URI apt uses for "$SUITE" itself (not -security/-updates), deb822 or one-line format
    if [ -n "${CLIPEDGE_DEBIAN_MIRROR:-}" ]; then echo "$CLIPEDGE_DEBIAN_MIRROR"; return; fi
    python3 - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1].rstrip("/")); sys.exit()
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path, encoding="utf-8", errors="replace").read()):
        fields = {}
        for line in stanza.splitlines():
            if line.strip() and not line.lstrip().startswith("#") and ":" in line and not line[0].isspace():
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if ("deb" in fields.get("types", []) and suite in fields.get("suites", [])
                and fields.get("enabled", ["yes"])[0].lower() != "no" and fields.get("uris")):
            print(fields["uris"][0].rstrip("/")); sys.exit()
print("http://deb.debian.org/debian")
EOF
}

rootfs_ok() {
    [ -f "$ROOTFS/.clipedge-stamp" ] && [ "$(cat "$ROOTFS/.clipedge-stamp")" = "$STAMP" ] &&
        chroot "$ROOTFS" /usr/bin/python3 -c 'import venv, ensurepip, ssl' >/dev/null 2>&1
}

remove_tree() {  # never rm -rf a tree with something still mounted inside it
    [ -n "$(mounted_under "$1")" ] && { for m in $(mounted_under "$1"); do umount "$m" || umount -l "$m"; done; }
    [ -z "$(mounted_under "$1")" ] || die "$1 still has mounts: $(mounted_under "$1" | tr '\n' ' ')"
    rm -rf --one-file-system "$1"
}

if rootfs_ok; then
    say "reusing the arm64 rootfs at $ROOTFS"
else
    MIRROR=$(debian_mirror)
    [ -e "$ROOTFS" ] && say "the cached rootfs at $ROOTFS is stale or broken: rebuilding"
    say "debootstrap arm64 $SUITE from $MIRROR (about 8-10 minutes)"
    remove_tree "$ROOTFS"
    remove_tree "$ROOTFS.tmp"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip \
        "$SUITE" "$ROOTFS.tmp" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 ||
        { tail -30 "$OUT/debootstrap.log"; tail -30 "$ROOTFS.tmp/debootstrap/debootstrap.log" 2>/dev/null;
          die "debootstrap"; }
    echo "$STAMP" > "$ROOTFS.tmp/.clipedge-stamp"
    mv "$ROOTFS.tmp" "$ROOTFS"
    rootfs_ok || die "the new rootfs's python3 does not run under qemu"
    say "rootfs built"
fi

# ---- 3. golden outputs from the x86 runtime ----------------------------------------------------------------------
PY=python
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; fi
remove_tree "$WORK"
mkdir -p "$WORK/src"
say "x86: exporting bundles and golden outputs ($("$PY" -c 'import sys; print(sys.executable)'))"
"$PY" "$HERE/make_golden.py" "$WORK" > "$OUT/make_golden.log" 2>&1 ||
    { grep -v '^INFO' "$OUT/make_golden.log" | tail -40; die "make_golden.py (x86 export)"; }
grep -E '^(exported|no export|golden)' "$OUT/make_golden.log" || true
IMAGE=$WORK/inputs/$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["photos"][0])' "$WORK/golden.json")
BUNDLE=$WORK/bundles/$("$PY" -c 'import json,sys; print("demo" if "demo" in json.load(open(sys.argv[1]))["bundles"] else "small")' "$WORK/golden.json")
"$PY" "$HERE/footprint.py" --venv "$(dirname "$(dirname "$(command -v "$PY")")")" --bundle "$BUNDLE" --image "$IMAGE" \
    --out "$OUT/footprint-x86_64-native.json" --label x86_64-native-reference --no-size > /dev/null 2>&1 ||
    say "(x86 reference footprint not measured)"

# ---- 4. the working tree into the rootfs, then the chroot --------------------------------------------------------
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -C "$WORK/src" -xf -
else
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ --exclude=./out \
        --exclude=./build --exclude=./dist -cf - . | tar -C "$WORK/src" -xf -
fi
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
for spec in "proc proc proc" "sysfs sys sys" "tmpfs dev/shm tmpfs"; do
    set -- $spec
    mount -t "$1" "$3" "$ROOTFS/$2"
    MOUNTS+=("$ROOTFS/$2")
done

# qemu-user shows the guest the host's /proc/cpuinfo (x86): with /sys mounted, LiteRT's cpuinfo library then
# crashes, and qemu's default CPU ("max") has SVE/SME, which no Pi has. So each profile emulates a Pi's core
# (QEMU_CPU, i.e. its HWCAPs) and bind-mounts that core's /proc/cpuinfo (as a Pi's 64-bit kernel prints it).
cpuinfo() {  # $1: Features line, $2: CPU variant, $3: CPU part, $4: revision
    local i n
    n=$(getconf _NPROCESSORS_CONF)
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$1"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$3" "$4"
    done
}
profile_cpu() {
    case $1 in
    pi5) echo cortex-a76 ;;  # BCM2712, Cortex-A76 (ARMv8.2)
    pi4) echo cortex-a72 ;;  # BCM2711, Cortex-A72 (ARMv8.0, no LSE atomics)
    *) die "unknown profile $1 (pi5, pi4)" ;;
    esac
}
profile_cpuinfo() {
    case $1 in
    pi5) cpuinfo "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" 0x4 0xd0b 1 ;;
    pi4) cpuinfo "fp asimd evtstrm crc32 cpuid" 0x0 0xd08 3 ;;
    esac
}
in_chroot() {  # $1: profile, then inside.sh's arguments
    local profile=$1 rc=0
    shift
    profile_cpuinfo "$profile" > "$CACHE/cpuinfo-$profile"
    mount --bind "$CACHE/cpuinfo-$profile" "$ROOTFS/proc/cpuinfo"
    chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/bin:/usr/bin:/bin \
        QEMU_CPU="$(profile_cpu "$profile")" PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt bash "$CHECK/src/.ci/arm64/inside.sh" "$@" || rc=$?
    umount "$ROOTFS/proc/cpuinfo"
    return "$rc"
}

PROFILES=${CLIPEDGE_ARM64_PROFILES:-pi5 pi4}
for profile in $PROFILES; do profile_cpu "$profile" > /dev/null; done
say "arm64 chroot: venv, pip install . (runtime dependencies only), footprint; then tests as: $PROFILES"
failed=()
set +e
in_chroot pi5 install 2>&1 | tee "$OUT/chroot-install.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(install)
if [ ${#failed[@]} -eq 0 ]; then
    for profile in $PROFILES; do
        in_chroot "$profile" test "$profile" 2>&1 | tee "$OUT/chroot-test-$profile.log"
        [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("tests-$profile")
    done
fi
set -e
for f in "$WORK"/footprint.json "$WORK"/hygiene-*.json "$WORK"/junit-*.xml "$WORK"/pip-freeze.txt "$WORK"/golden.json; do
    if [ -f "$f" ]; then cp "$f" "$OUT/"; fi
done

# ---- 5. report ---------------------------------------------------------------------------------------------------
if [ -f "$OUT/footprint.json" ]; then
    "$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
arm = json.loads((out / "footprint.json").read_text())
ref = out / "footprint-x86_64-native.json"
x86 = json.loads(ref.read_text()) if ref.is_file() else None
merged = {"arm64_bookworm_qemu": arm, "x86_64_native_reference": x86}
(out / "footprint.json").write_text(json.dumps(merged, indent=2))
top = ", ".join(f"{k} {v} MB" for k, v in list(arm["distributions_mb"].items())[:5])
print(f"footprint (arm64 bookworm under qemu; bundle {Path(arm['bundle']).name}):")
print(f"  venv on disk             {arm['venv_disk_mb']} MB  (largest: {top})")
print(f"  import clipedge.runtime  {arm['import_clipedge_runtime_s'] * 1000:.0f} ms emulated"
      + (f"  (x86 native {x86['import_clipedge_runtime_s'] * 1000:.0f} ms)" if x86 else ""))
print(f"  import clipedge.runtime.clip_runtime (numpy etc.)  {arm['import_clipedge_runtime_clip_s']:.2f} s emulated"
      + (f"  (x86 native {x86['import_clipedge_runtime_clip_s']:.2f} s)" if x86 else ""))
for precision, row in arm["classify_one_image"].items():
    native = x86["classify_one_image"].get(precision) if x86 else None
    print(f"  classify 1 image {precision:<13} peak RSS {row['peak_rss_mb']} MB emulated (qemu incl.; bare python "
          f"{arm['python_baseline_peak_rss_mb']} MB), {row['wall_s']} s"
          + (f"; x86 native {native['peak_rss_mb']} MB, {native['wall_s']} s" if native else ""))
print(f"  written to {out / 'footprint.json'}")
EOF
fi
[ ${#failed[@]} -eq 0 ] || die "in the arm64 chroot: ${failed[*]} (logs: $OUT/chroot-*.log)"
