#!/usr/bin/env bash
# Installs what the build and the tests use from the OS (Debian 12), and
# nothing that is there already. Idempotent; the README's test command and
# .ci/run both start with it. Needs root when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg (unattended-upgrades, a concurrent install)
# to let go of its lock instead of failing at once with "Could not get
# lock /var/lib/dpkg/lock-frontend".
apt_wait=(-o DPkg::Lock::Timeout=600)

# What the tests use from the OS:
# - gcc builds the bundled SQLite (rusqlite's `bundled` feature);
# - Debian's own /usr/bin/python3 imports ssl, which maps libssl3 from dpkg;
# - chroot (coreutils) gives a real process its own root and dpkg database;
# - ip netns (iproute2) gives a real process its own network namespace;
# - dpkg-query is the reference the tests compare versions against;
# - clang, llvm-strip (llvm) and libbpf's BPF headers (libbpf-dev) rebuild the
#   checked-in eBPF object to prove it current (ebpf/build.sh --check);
# - language packages: python3 -m venv (python3-venv), PyYAML's C extension
#   and Debian's cryptography (python3-yaml, python3-cryptography), objcopy
#   (binutils) for a real .dep-v0 section, node (nodejs), a JDK that runs a
#   source file (default-jdk-headless) and a Debian jar (libcommons-io-java);
# - bpftool, whose changelog (the kernel's) the changelog parser is checked on,
#   and which lists the programs on a cgroup for the containment tests.
#   The image's pyenv 3.11.7, terraform and docker CLI are compared with what
#   pip list and go version -m saw on it (testdata/).
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ -x /usr/bin/python3 ] || need+=(python3)
command -v chroot >/dev/null || need+=(coreutils)
command -v ip >/dev/null || need+=(iproute2)
dpkg-query -W -f '${Status}' libssl3 2>/dev/null | grep -q 'ok installed' || need+=(libssl3)
command -v clang >/dev/null || need+=(clang)
command -v llvm-strip >/dev/null || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
[ -f /usr/lib/python3/dist-packages/pip/__init__.py ] || need+=(python3-pip)
command -v curl >/dev/null || need+=(curl)
# cargo fetches crates, and tests fetch wheels and npm packages, over HTTPS:
# a minimal Debian has no CA bundle (here it came only as a dependency of
# the JDK).
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
/usr/bin/python3 -c 'import yaml._yaml' 2>/dev/null || need+=(python3-yaml)
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography)
/usr/bin/python3 -c 'import pygments' 2>/dev/null || need+=(python3-pygments)
command -v objcopy >/dev/null || need+=(binutils)
command -v node >/dev/null || need+=(nodejs)
# - Debian's pip (python3-pip, 23.0.1): the incident tests scope the real
#   PYSEC-2023-228 record to the system python3, which has it installed;
# - curl posts the deploy gate's AdmissionReview fixtures over HTTP(S).
# npm installs two small packages from the registry for tests/tests/agreement.rs.
command -v npm >/dev/null || need+=(npm)
# perl with IPC::SysV and Devel::Peek (XS modules) for the loader tests.
perl -MIPC::SysV -MDevel::Peek -e1 2>/dev/null || need+=(perl)
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/share/java/commons-io.jar ] || need+=(libcommons-io-java)
# The jar and zip parsers are checked against every jar Debian installs
# under /usr/share/java (maven brings about 150) and build fat jars from
# commons-cli's.
[ -f /usr/share/java/commons-cli.jar ] || need+=(libcommons-cli-java)
command -v mvn >/dev/null || need+=(maven)
# bzip2, a binNMU (1.0.8-5+b1) whose source changelog names CVEs: the
# lookup of a binNMU's source entry is checked on it.
command -v bzip2 >/dev/null || need+=(bzip2)
# The changelog parser is checked against every Debian changelog a TSV of
# this image lists; bpftool's (the kernel's) carries most of its CVEs.
[ -f /usr/share/doc/bpftool/changelog.Debian.gz ] || need+=(bpftool)
# The live runtime tests (tests/tests/runtimes.rs) run real containers:
# Podman with runc (crun refuses this hybrid cgroup layout), containerd and
# its ctr, and debootstrap, which builds their image offline from the apt
# mirror (tests/runtimes/image.sh).
command -v podman >/dev/null || need+=(podman)
[ -x /usr/sbin/runc ] || need+=(runc)
command -v containerd >/dev/null || need+=(containerd)
command -v debootstrap >/dev/null || need+=(debootstrap)
# The paging test (collector/tests/webhooks.rs) starts a real Alertmanager on
# loopback, with clustering off and its own storage and config.
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
# The PostgreSQL store's conformance suite (collector/src/store/postgres/)
# starts a throwaway PostgreSQL 15 of its own: initdb and pg_ctl, run as the
# `postgres` user the package creates. The package's own cluster is never used.
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
# The upgrade test moves libaom3 between the two versions the archive
# serves: apt's lists must know both.
lists_fresh=0
if [ "$(apt-cache madison libaom3 2>/dev/null | wc -l)" -lt 2 ]; then
    apt-get "${apt_wait[@]}" update -qq
    lists_fresh=1
fi
# promtool (from Debian's prometheus package, only the binary, not the
# server) checks the collector's /metrics exposition
# (response::verify::metrics): extracted from the .deb into a cache, never
# installed.
PROMTOOL_DIR=/var/cache/patchgap-tests/prometheus
if [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
    mkdir -p "$PROMTOOL_DIR"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq prometheus)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$PROMTOOL_DIR"
    rm -rf "$tmp"
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "tests/deps.sh: installing ${need[*]}"
    [ "$lists_fresh" = 1 ] || apt-get "${apt_wait[@]}" update -qq
    apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${need[@]}"
fi


