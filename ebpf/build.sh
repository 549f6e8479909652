#!/usr/bin/env bash
# Builds the eBPF object ebpf/obj/patchgap.bpf.o from ebpf/bpf/*.{c,h}.
#
#   ebpf/build.sh           rebuild the object in place
#   ebpf/build.sh --check   rebuild into a temporary file; exit 1 if the
#                           checked-in object differs (CI runs this)
#
# The object is checked in so that `cargo build` needs no clang. The build is
# deterministic: it runs from the repository root with relative paths, maps the
# build directory out of the debug info, and strips the DWARF (llvm-strip -g),
# which keeps .BTF and .BTF.ext (types, CO-RE relocations, line info) and the
# symbol table (aya finds programs and maps by symbol name). The same sources
# and the same compiler give a byte-identical object on any checkout path.
#
# Needs clang and llvm-strip (Debian: clang, llvm; the object in git was built
# with Debian clang 14.0.6) and libbpf's BPF headers (Debian: libbpf-dev).
# CLANG and LLVM_STRIP override the tools.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

src=ebpf/bpf/patchgap.bpf.c
obj=ebpf/obj/patchgap.bpf.o
expected_clang="Debian clang version 14.0.6"

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
-h | --help)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
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
# 32-bit jumps and ALU ops (kernel 5.1+; ring buffers need 5.8 anyway).
# -fdebug-prefix-map keeps the checkout path out of the object.
"$clang" -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 \
    -Wall -Werror \
    -fdebug-prefix-map="$root"=. \
    -I ebpf/bpf \
    -c "$src" -o "$tmp/full.o"
"$strip" -g "$tmp/full.o" -o "$tmp/patchgap.bpf.o"

# aya needs the BTF (maps, globals, CO-RE) and its extension (relocations).
readelf="$(command -v llvm-readelf || command -v readelf || true)"
if [ -z "$readelf" ]; then
    echo "ebpf/build.sh: neither llvm-readelf nor readelf found" >&2
    exit 2
fi
sections="$(LC_ALL=C "$readelf" -S "$tmp/patchgap.bpf.o")"
for s in .BTF .BTF.ext .maps .rodata license; do
    if ! grep -qE "[[:space:]]\\$s[[:space:]]" <<<"$sections"; then
        echo "ebpf/build.sh: section $s missing from the stripped object" >&2
        exit 1
    fi
done

if [ "$check" = 1 ]; then
    if [ -f "$obj" ] && cmp -s "$tmp/patchgap.bpf.o" "$obj"; then
        echo "ebpf/build.sh: $obj is up to date"
        exit 0
    fi
    if [ -f "$obj" ]; then
        echo "$obj is stale; run ebpf/build.sh" >&2
    else
        echo "$obj is missing; run ebpf/build.sh" >&2
    fi
    version="$("$clang" --version | head -n1)"
    case "$version" in
    "$expected_clang"*) ;;
    *) echo "(note: this is '$version'; the checked-in object comes from '$expected_clang', and another compiler gives other bytes)" >&2 ;;
    esac
    exit 1
fi

mkdir -p "$(dirname "$obj")"
cp "$tmp/patchgap.bpf.o" "$obj"
echo "ebpf/build.sh: wrote $obj ($(wc -c <"$obj") bytes)"
