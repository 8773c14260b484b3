#!/bin/sh
# Builds the harouterd Debian package from a static binary (`make deb`):
#
#   packaging/deb/build.sh BINARY OUTDIR
#
# prints the path of OUTDIR/harouterd_VERSION_ARCH.deb. No debhelper: the
# tree is laid out here with explicit modes, and `dpkg-deb --root-owner-group`
# makes every file root's without fakeroot. The version is Cargo.toml's,
# which must head packaging/deb/changelog; file dates are the changelog
# entry's (SOURCE_DATE_EPOCH), so the same inputs give the same package.
set -eu

[ $# -eq 2 ] || {
    echo "usage: $0 BINARY OUTDIR" >&2
    exit 2
}
binary=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)
packaging=$(dirname "$here")
repo=$(dirname "$packaging")

[ -x "$binary" ] || {
    echo "$0: $binary is not an executable (run make static)" >&2
    exit 1
}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
changelog_version=$(sed -n '1s/^harouterd (\([^)]*\)).*/\1/p' "$here/changelog")
if [ "$version" != "$changelog_version" ]; then
    echo "$0: Cargo.toml says $version, packaging/deb/changelog $changelog_version: add a changelog entry" >&2
    exit 1
fi
changelog_date=$(sed -n 's/^ -- .*>  \(.*\)$/\1/p' "$here/changelog" | head -n 1)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date -d "$changelog_date" +%s)}
export SOURCE_DATE_EPOCH

# The ELF machine of the binary (e_machine, little-endian at offset 18).
machine=$(od -An -tu2 -j18 -N2 "$binary" | tr -d ' ')
case "$machine" in
62) arch=amd64 ;;
183) arch=arm64 ;;
3) arch=i386 ;;
40) arch=armhf ;;
*)
    echo "$0: $binary: unknown ELF machine $machine" >&2
    exit 1
    ;;
esac

root=$(mktemp -d "${TMPDIR:-/tmp}/harouterd-deb.XXXXXX")
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
umask 022

install -D -m 0755 "$binary" "$root/usr/sbin/harouterd"
# It may hold the VRRP password: root's alone.
install -D -m 0600 "$packaging/harouterd.conf.example" "$root/etc/harouterd/harouterd.conf"
install -D -m 0644 "$packaging/harouterd.default" "$root/etc/default/harouterd"
install -D -m 0755 "$packaging/harouterd.init" "$root/etc/init.d/harouterd"
install -D -m 0644 "$packaging/harouterd.logrotate" "$root/etc/logrotate.d/harouterd"
install -D -m 0644 "$packaging/harouterd.service" "$root/lib/systemd/system/harouterd.service"
for page in harouterd.8 harouterd.conf.5; do
    section=${page##*.}
    install -d -m 0755 "$root/usr/share/man/man$section"
    gzip -9n <"$packaging/man/$page" >"$root/usr/share/man/man$section/$page.gz"
    chmod 0644 "$root/usr/share/man/man$section/$page.gz"
done
doc=$root/usr/share/doc/harouterd
install -D -m 0644 "$here/copyright" "$doc/copyright"
install -D -m 0644 "$here/README.Debian" "$doc/README.Debian"
install -D -m 0644 "$packaging/harouterd.conf.example" "$doc/examples/harouterd.conf.example"
gzip -9n <"$here/changelog" >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/harouterd"

install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
    -e "s/@MAINTAINER@/${DEB_MAINTAINER:-harouterd developers <harouterd@example.org>}/" \
    "$here/control.in" >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
deb=$outdir/harouterd_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
