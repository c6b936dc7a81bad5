#!/bin/sh
# The DaemonSet's init container (busybox sh in the node image): installs fastpath-hook, the
# CNI plugin and its network config, libfastpath_net and the CDI spec on the node, then `gc`.
#
# Every host directory is mounted at its own path in the container (see daemonset.yaml), so
# the paths written into the hooks.d files and configs are the host's. The ConfigMap is at
# /config. Re-running it is harmless: each file is replaced atomically (cp to a temporary
# name, then mv), so a runtime never runs a half-written hook or reads a half-written config.
set -eu

CONFIG=${FASTPATH_CONFIG_DIR:-/config}
HOOK=/opt/fastpath/bin/fastpath-hook
HOOK_TOML=/etc/fastpath/hook.toml

# install SRC DST MODE: an atomic replace of DST.
install_file() {
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.fastpath-new"
    chmod "$3" "$2.fastpath-new"
    mv "$2.fastpath-new" "$2"
    echo "installed $2"
}

# The hook and the library it mounts into containers (hook.toml: lib_dir = "/opt/fastpath/lib").
install_file /usr/local/bin/fastpath-hook "$HOOK" 755
install_file /usr/local/lib/fastpath/libfastpath_net.so /opt/fastpath/lib/libfastpath_net.so 644
install_file /usr/local/lib/fastpath/fastpath_net.h /opt/fastpath/lib/fastpath_net.h 644
install_file "$CONFIG/hook.toml" "$HOOK_TOML" 644

# hooks.d for podman and CRI-O (podman reads both directories; same file names, so the one in
# /etc overrides the other instead of running twice).
for dir in /usr/share/containers/oci/hooks.d /etc/containers/oci/hooks.d; do
    "$HOOK" --config "$HOOK_TOML" install --hooks-dir "$dir" --hook "$HOOK"
done

# The CNI plugin and its network config. 99-: after the cluster's own network config, so it
# never becomes the default network of a pod; Multus pods get fastpath-net from the
# NetworkAttachmentDefinition instead.
if [ -x /usr/local/bin/fastpath-cni ]; then
    install_file /usr/local/bin/fastpath-cni /opt/cni/bin/fastpath-cni 755
    install_file "$CONFIG/fastpath-net.conf" /etc/cni/net.d/99-fastpath-net.conf 644
    mkdir -p /run/fastpath/cni
else
    echo "fastpath-cni is not in this image: no CNI plugin installed" >&2
fi

# The CDI spec (containerd 1.7+, CRI-O, podman: --device fastpath.io/port=br0).
mkdir -p /etc/cdi
"$HOOK" --config "$HOOK_TOML" cdi generate --output /etc/cdi/fastpath.io.yaml

# What containers that died with the node (or with their runtime) still hold.
"$HOOK" --config "$HOOK_TOML" gc
