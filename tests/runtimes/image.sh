#!/usr/bin/env bash
# Builds, once per machine, the image the live runtime tests run: a minimal
# Debian 12 debootstrapped from the apt mirror this machine is configured
# with (no registry is ever asked), with busybox and GNU hello installed,
# packages the host does not have, so that a package found for the
# container's process (busybox sleep) can only come from the container's
# own root. Imported into Podman's storage as
# $TAG with OCI provenance labels; with --oci-archive FILE it also writes
# the image as an OCI archive (what `ctr image import` reads).
#
# Re-running is cheap: an image already under $TAG is reused as it is.
set -euo pipefail
TAG=localhost/patchgap-test-debian:bookworm-2
# Fixed provenance, so that tests can assert it.
REVISION=4b825dc642cb6eb9a060e54bf8d69288fbee4904
SOURCE=https://example.org/patchgap/test-image
CREATED=2026-12-01T00:00:00Z
PODMAN=(podman --runtime /usr/sbin/runc)

archive=""
if [ "${1:-}" = "--oci-archive" ]; then
    archive="$2"
fi

if ! "${PODMAN[@]}" image exists "$TAG"; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "image.sh: no Debian mirror configured in /etc/apt" >&2; exit 1; }
    dir=$(mktemp -d /var/tmp/patchgap-image.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    echo "image.sh: debootstrap bookworm from $mirror (about a minute)" >&2
    debootstrap --variant=minbase --include=hello,busybox bookworm "$dir/root" "$mirror" >"$dir/log" 2>&1 \
        || { tail -20 "$dir/log" >&2; exit 1; }
    # What the image does not need and would only make it larger.
    rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*
    tar -C "$dir/root" -c . | "${PODMAN[@]}" import \
        --change "LABEL org.opencontainers.image.revision=$REVISION" \
        --change "LABEL org.opencontainers.image.source=$SOURCE" \
        --change "LABEL org.opencontainers.image.created=$CREATED" \
        --change 'CMD ["/bin/sh"]' \
        - "$TAG" >/dev/null
fi
if [ -n "$archive" ]; then
    rm -f "$archive"
    "${PODMAN[@]}" save --format oci-archive -o "$archive" "$TAG" >/dev/null
fi
echo "$TAG"
