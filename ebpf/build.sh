#!/usr/bin/env bash
# Builds the eBPF objects in ebpf/obj/ from ebpf/bpf/*.{c,h}:
#   patchgap.bpf.o  live sensing (patchgap.bpf.c)
#   contain.bpf.o   host isolation (contain.bpf.c), its own object so that a
#                   failed relocation in one cannot fail the other
#
#   ebpf/build.sh           rebuild the objects in place
#   ebpf/build.sh --check   rebuild into a temporary directory; exit 1 if a
#                           checked-in object differs (CI runs this)
#
# The objects are checked in so that `cargo build` needs no clang. The build is
# deterministic: it runs from the repository root with relative paths, maps the
# build directory out of the debug info, and strips the DWARF (llvm-strip -g),
# which keeps .BTF and .BTF.ext (types, CO-RE relocations, line info) and the
# symbol table (aya finds programs and maps by symbol name). The same sources
# and the same compiler give byte-identical objects on any checkout path.
#
# Needs clang and llvm-strip (Debian: clang, llvm; the objects in git were built
# with Debian clang 14.0.6) and libbpf's BPF headers (Debian: libbpf-dev).
# CLANG and LLVM_STRIP override the tools.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Each object: its source and the sections it must keep after stripping
# (aya needs the BTF for maps, globals and CO-RE, and its extension for
# relocations; patchgap.bpf.o also has load-time globals in .rodata).
objects=(patchgap contain)
declare -A sections_of=(
    [patchgap]=".BTF .BTF.ext .maps .rodata license"
    [contain]=".BTF .BTF.ext .maps license"
)
expected_clang="Debian clang version 14.0.6"

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
-h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: ebpf/build.sh [--check]" >&2
    exit 2
    ;;
esac

clang="${CLANG:-clang}"
strip="${LLVM_STRIP:-llvm-strip}"
for tool in "$clang" "$strip"; do
    if ! command -v "$tool" >/dev/null; then
        echo "ebpf/build.sh: $tool not found (Debian: apt-get install clang llvm libbpf-dev)" >&2
        exit 2
    fi
done
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
    echo "ebpf/build.sh: /usr/include/bpf/bpf_helpers.h not found (Debian: apt-get install libbpf-dev)" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# -g carries the BTF and the CO-RE relocations (required); -mcpu=v3 allows
# 32-bit jumps and ALU ops (kernel 5.1+; ring buffers need 5.8 anyway) and
# the atomics contain.bpf.c uses (compare-and-swap, 5.12).
# -fdebug-prefix-map keeps the checkout path out of the object.
build() {
    local name="$1"
    "$clang" -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 \
        -Wall -Werror \
        -fdebug-prefix-map="$root"=. \
        -I ebpf/bpf \
        -c "ebpf/bpf/$name.bpf.c" -o "$tmp/$name.full.o"
    "$strip" -g "$tmp/$name.full.o" -o "$tmp/$name.bpf.o"
}

readelf="$(command -v llvm-readelf || command -v readelf || true)"
if [ -z "$readelf" ]; then
    echo "ebpf/build.sh: neither llvm-readelf nor readelf found" >&2
    exit 2
fi

stale=0
for name in "${objects[@]}"; do
    build "$name"
    out="$tmp/$name.bpf.o"
    obj="ebpf/obj/$name.bpf.o"
    sections="$(LC_ALL=C "$readelf" -S "$out")"
    for s in ${sections_of[$name]}; do
        if ! grep -qE "[[:space:]]\\$s[[:space:]]" <<<"$sections"; then
            echo "ebpf/build.sh: section $s missing from the stripped $name.bpf.o" >&2
            exit 1
        fi
    done

    if [ "$check" = 1 ]; then
        if [ -f "$obj" ] && cmp -s "$out" "$obj"; then
            echo "ebpf/build.sh: $obj is up to date"
        elif [ -f "$obj" ]; then
            echo "$obj is stale; run ebpf/build.sh" >&2
            stale=1
        else
            echo "$obj is missing; run ebpf/build.sh" >&2
            stale=1
        fi
        continue
    fi

    mkdir -p "$(dirname "$obj")"
    cp "$out" "$obj"
    echo "ebpf/build.sh: wrote $obj ($(wc -c <"$obj") bytes)"
done

if [ "$stale" = 1 ]; then
    version="$("$clang" --version | head -n1)"
    case "$version" in
    "$expected_clang"*) ;;
    *) echo "(note: this is '$version'; the checked-in objects come from '$expected_clang', and another compiler gives other bytes)" >&2 ;;
    esac
    exit 1
fi
