#!/bin/sh
# Builds fastpath's node image (deploy/Containerfile) from a local rootfs: static binaries
# built here, busybox-static from the host, libfastpath_net.so and its header. No registry pulls.
#
# Usage: deploy/build-image.sh [--no-build] [TAG]     (TAG default: localhost/fastpath-node:dev)
#   --no-build   use the binaries already in target/ (static ones in target/static, or in
#                $FASTPATH_STATIC_BIN_DIR as for the integration tests)
# Environment: PODMAN (default podman) and PODMAN_FLAGS (e.g. --root DIR, for a private store).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi
tag=${1:-localhost/fastpath-node:dev}
target=${CARGO_TARGET_DIR:-$root/target}
static=${FASTPATH_STATIC_BIN_DIR:-$target/static/x86_64-unknown-linux-gnu/release}
podman=${PODMAN:-podman}

cd "$root"
if [ "$build" = 1 ]; then
    # The same static build as `cargo xtask test` (Workspace::build_static_examples), plus the
    # hook and, when its crate exists, the CNI plugin.
    cni=
    if cargo metadata --no-deps --format-version 1 | grep -q '"name":"fastpath-cni"'; then cni="-p fastpath-cni"; fi
    # shellcheck disable=SC2086
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu \
        -p fastpath -p fastpath-hook $cni --target-dir "$target/static"
    cargo build --release -p fastpath-net
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/fastpath-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib/fastpath" "$rootfs/usr/share/fastpath" "$rootfs/bin" \
    "$rootfs/run/fastpath" "$rootfs/tmp"

static_only() {
    command -v file >/dev/null || return 0
    if ! file -L "$1" | grep -q 'statically linked\|static-pie linked'; then
        echo "build-image.sh: $1 is not a static executable (run without --no-build)" >&2
        exit 1
    fi
}
for b in fastpathd fastpathctl fastpath-hook fastpath-cni; do
    if [ -f "$static/$b" ]; then
        static_only "$static/$b"
        cp "$static/$b" "$rootfs/usr/local/bin/$b"
    elif [ "$b" = fastpath-cni ]; then
        echo "build-image.sh: no fastpath-cni built: the image has no CNI plugin" >&2
    else
        echo "build-image.sh: $static/$b is missing (run without --no-build)" >&2
        exit 1
    fi
done
# The library is for the workloads' images and the hook's fastpath.io/inject: the host's build.
cp "$target/release/libfastpath_net.so" "$rootfs/usr/local/lib/fastpath/"
cp netlib/ffi/include/fastpath_net.h "$rootfs/usr/local/lib/fastpath/"
cp deploy/install.sh "$rootfs/usr/share/fastpath/install.sh"
static_only /bin/busybox
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cp mv mkdir chmod cat ls rm dirname echo test; do ln -s busybox "$rootfs/bin/$applet"; done

# shellcheck disable=SC2086
"$podman" ${PODMAN_FLAGS:-} build --pull=never -f deploy/Containerfile -t "$tag" "$ctx"
echo "built $tag"
