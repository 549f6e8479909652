#!/usr/bin/env bash
# Builds the Debian package: target/debian/patchgap_<version>_amd64.deb,
# with cargo-deb from the metadata in cli/Cargo.toml ([package.metadata.deb]).
#
#   packaging/deb/build.sh            # release build of the three binaries, then the .deb
#   packaging/deb/build.sh --no-build # package what target/release holds
#
# Needs cargo-deb (`cargo install cargo-deb --version =3.8.0 --locked`; 3.8
# builds on Rust 1.85 and up) and dpkg-dev's dpkg-shlibdeps for the
# dependencies. Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || {
    echo "packaging/deb/build.sh: cargo-deb is missing: cargo install cargo-deb --version =3.8.0 --locked" >&2
    exit 1
}
version=$(cargo metadata --no-deps --format-version 1 --locked \
    | /usr/bin/python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cli"))')
# The package's changelog names the version it describes; a release bumps both.
changelog_version=$(sed -n '1s/^patchgap (\([^)]*\)).*/\1/p' packaging/deb/changelog)
if [ "$changelog_version" != "$version" ]; then
    echo "packaging/deb/build.sh: packaging/deb/changelog is at $changelog_version, the workspace at $version: add an entry" >&2
    exit 1
fi

if [ "${1:-}" != --no-build ]; then
    # cargo-deb builds only the crate it packages (the CLI); the agent and
    # the collector are other crates of the workspace.
    cargo build --release --locked -p patchgap-agent -p patchgap-collector -p cli --bins
fi
# --no-build: the binaries are the ones just built, whichever crate they
# come from. Stripped by cargo-deb (no debug symbols in the package).
cargo deb -p cli --no-build --locked --output "target/debian/patchgap_${version}_amd64.deb" >&2
echo "target/debian/patchgap_${version}_amd64.deb"
