#!/bin/sh
# Rebuilds the rpm fixture (testdata/rpm/root, packages/, expected.txt) the way
# it was first made. Needs Debian's `rpm` package (apt-get install -y rpm) and
# gcc. The bytes will differ from the committed ones (build times, install
# times, build host), so tests compare the parse with expected.txt rather than
# with fixed checksums. Run from testdata/rpm: sh src/make-fixture.sh
set -eu
here=$(pwd)
work=$(mktemp -d)
mkdir -p "$work/SPECS" "$work/SOURCES"
cp src/*.spec "$work/SPECS/"
cp src/*.c "$work/SOURCES/"
for spec in demo demo-data; do
  rpmbuild --define "_topdir $work" --define '_build_id_links none' -bb "$work/SPECS/$spec.spec"
done
rm -rf root/var/lib/rpm root/usr root/etc/demo.conf packages
mkdir -p packages root/var/lib/rpm
cp "$work"/RPMS/*/*.rpm packages/
# Debian's rpm defaults to _dbpath /root/.rpmdb; say where and which backend.
rpmdb() { rpm --root "$here/root" --dbpath /var/lib/rpm --define '_db_backend sqlite' "$@"; }
rpmdb --initdb
rpmdb --nodeps -i packages/*.rpm
rpmdb -qa --qf 'PKG\t%{NAME}\t%|EPOCH?{%{EPOCH}}:{(none)}|\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\t%{VENDOR}\t%{DISTRIBUTION}\n[FILE\t%{=NAME}\t%{FILENAMES}\n]' > expected.txt
# rpm leaves an empty WAL, the shared-memory index and a lock file behind.
rm -f root/var/lib/rpm/rpmdb.sqlite-wal root/var/lib/rpm/rpmdb.sqlite-shm root/var/lib/rpm/.rpm.lock
rm -rf "$work"
