#!/usr/bin/env bash
# CI's GPU: Mesa's software Vulkan (lavapipe) from bookworm-backports, so that LiteRT's GPU accelerator (WebGPU over
# Vulkan, through Dawn) has an adapter to run the gpu variants on. bookworm's own Mesa 22.3 is refused by Dawn
# ("shaderUniform*ArrayDynamicIndexing required"); Mesa >= 25 works. Proves correctness, not speed (docs/gpu.md).
#
# Run as root (or with sudo) before the test command; then export the variables it prints:
#   eval "$(bash .ci/gpu-setup.sh)"
# Everything but the final `export` lines goes to stderr, so the eval sees only them.
set -euo pipefail
exec 3>&1 1>&2  # fd 3: what the caller evals; stdout: apt's chatter, to stderr

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
target=()
if [ "$codename" = bookworm ]; then
    # bookworm-backports, unless some apt source already names it
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "adding bookworm-backports to apt's sources"
        printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" \
            "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    fi
    target=(-t bookworm-backports)
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# mesa-vulkan-drivers brings lavapipe (libvulkan_lvp.so); libvulkan1 is the loader Dawn opens; vulkan-tools has
# vulkaninfo, which names the device below.
$SUDO apt-get install -y -q --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1 vulkan-tools

version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)
echo "mesa-vulkan-drivers $version"
case "$version" in
    2[5-9].*|[3-9][0-9].*) ;;
    *) echo "Mesa $version is older than 25: Dawn (LiteRT's GPU accelerator) refuses it" >&2; exit 1 ;;
esac

# The Vulkan loader and Mesa want a private runtime directory (0700); CI containers have none.
runtime_dir=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}
mkdir -p "$runtime_dir" && chmod 0700 "$runtime_dir"
export XDG_RUNTIME_DIR=$runtime_dir

echo "Vulkan devices:"
vulkaninfo --summary 2>/dev/null | grep -E "deviceName|deviceType|driverInfo|apiVersion" \
    || { echo "vulkaninfo found no Vulkan device" >&2; exit 1; }

echo "export XDG_RUNTIME_DIR=$runtime_dir" >&3
