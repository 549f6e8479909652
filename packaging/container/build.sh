#!/usr/bin/env bash
# Builds localhost/patchgap-agent:<version> and localhost/patchgap-collector:<version>
# into the local Podman storage, offline: no registry is ever asked.
#
#   packaging/container/build.sh
#
# 1. The base: a minimal Debian 12 that debootstrap makes from the apt mirror
#    this machine uses, imported as localhost/patchgap-debian:bookworm (once;
#    delete that image to make it again).
# 2. The package: target/debian/patchgap_<version>_amd64.deb, built by
#    packaging/deb/build.sh when it is missing, unpacked as the build context.
# 3. Each image: FROM scratch, with the daemon, the shared libraries it links
#    (copied from the base's Debian libc6 and libgcc-s1 by ldd), its config
#    and an /etc/passwd. No shell and no package manager: nothing runs in it
#    but the daemon.
#
# Podman here needs runc (crun refuses this host's hybrid cgroups) and
# explicit ulimits (PLATFORM.md); RUN steps get no network.
set -euo pipefail
cd "$(dirname "$0")/../.."

runtime=(--runtime /usr/sbin/runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
base=localhost/patchgap-debian:bookworm

mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

if ! podman image exists "$base"; then
    command -v debootstrap >/dev/null || { echo "packaging/container/build.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    rootfs=$(mktemp -d /var/tmp/patchgap-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "container: debootstrap bookworm (minbase) from $mirror" >&2
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
    tar -C "$rootfs" -c . | podman import --message "debootstrap --variant=minbase bookworm $mirror" - "$base" >&2
    rm -rf "$rootfs"
    trap - EXIT
fi

version=$(cargo metadata --no-deps --format-version 1 --locked \
    | /usr/bin/python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cli"))')
deb=target/debian/patchgap_${version}_amd64.deb
[ -f "$deb" ] || packaging/deb/build.sh >&2

context=$(mktemp -d /var/tmp/patchgap-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
dpkg-deb -x "$deb" "$context/deb"
cp packaging/container/Containerfile.* "$context/"

for daemon in agent collector; do
    # The image this tag named before, removed once replaced (unless a
    # container still uses it), so rebuilds leave no untagged images.
    previous=$(podman image inspect --format '{{.Id}}' "localhost/patchgap-$daemon:$version" 2>/dev/null || true)
    # --layers=false: no cached stage images left behind (the build takes seconds).
    podman build "${runtime[@]}" "${limits[@]}" --pull=never --network=none --layers=false \
        --build-arg "BASE=$base" --build-arg "VERSION=$version" \
        --file "$context/Containerfile.$daemon" \
        --tag "localhost/patchgap-$daemon:$version" "$context" >&2
    current=$(podman image inspect --format '{{.Id}}' "localhost/patchgap-$daemon:$version")
    if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
done
podman images --filter "reference=localhost/patchgap-*:$version" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
