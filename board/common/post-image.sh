#!/bin/sh
# Buildroot post-image script of every mxrack board.
#   $1: the images directory; $2: the board (BR2_ROOTFS_POST_SCRIPT_ARGS)
# The kernel (bzImage) carries the initramfs and its command line. It becomes
# a unified kernel image (image/uki.py: systemd's EFI stub with an .osrel
# naming the image version and board) in EFI/Linux/ of the boot disk's EFI
# system partition, beside systemd-boot as EFI/BOOT/BOOTX64.EFI and its
# loader.conf, laid out by genimage (board/<board>/genimage.cfg) into
# disk.img; the same image is signed into the update bundle
# mxrack-<board>-<version>.mxb (`mxrack update BUNDLE`), as image/build does.
#
# Needs on the build host: Debian's systemd-boot-efi (the stub and
# systemd-boot; SYSTEMD_BOOT_EFI_DIR for another folder), binutils, python3.
# MXRACK_SIGNING_KEY: the bundle's key (default image/keys/development.key,
# whose public half post-build.sh put in the image); MXRACK_IMAGE_VERSION:
# dotted numbers (default <mxrack version>.<UTC build time>).
set -eu

BINARIES_DIR=$1
BOARD=${2:?board name expected (BR2_ROOTFS_POST_SCRIPT_ARGS)}
COMMON=$(dirname "$(readlink -f "$0")")
REPO=$(dirname "$(dirname "$COMMON")")
BOARD_DIR=$REPO/board/$BOARD
EFI_DIR=${SYSTEMD_BOOT_EFI_DIR:-/usr/lib/systemd/boot/efi}
MXRACK=${TARGET_DIR:?TARGET_DIR expected (Buildroot exports it)}/usr/bin/mxrack
KEY=${MXRACK_SIGNING_KEY:-$REPO/image/keys/development.key}

for f in "$EFI_DIR/linuxx64.efi.stub" "$EFI_DIR/systemd-bootx64.efi"; do
    [ -e "$f" ] || { echo "post-image: $f missing (apt-get install systemd-boot-efi)" >&2; exit 1; }
done
crate=$("$MXRACK" --version | awk '{print $NF}')
VERSION=${MXRACK_IMAGE_VERSION:-$crate.$(date -u +%Y%m%d%H%M%S)}
REVISION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)

rm -rf "$BINARIES_DIR/efi-part"
mkdir -p "$BINARIES_DIR/efi-part/EFI/BOOT" "$BINARIES_DIR/efi-part/EFI/Linux" "$BINARIES_DIR/efi-part/loader"
UKI=$BINARIES_DIR/efi-part/EFI/Linux/mxrack-$VERSION.efi
python3 "$REPO/image/uki.py" --stub "$EFI_DIR/linuxx64.efi.stub" --kernel "$BINARIES_DIR/bzImage" \
    --version "$VERSION" --board "$BOARD" --revision "$REVISION" --out "$UKI"
cp "$EFI_DIR/systemd-bootx64.efi" "$BINARIES_DIR/efi-part/EFI/BOOT/BOOTX64.EFI"
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from uki import LOADER_CONF; print(LOADER_CONF, end="")' \
    "$REPO/image" >"$BINARIES_DIR/efi-part/loader/loader.conf"
"$MXRACK" update bundle --key "$KEY" --revision "$REVISION" \
    --out "$BINARIES_DIR/mxrack-$BOARD-$VERSION.mxb" "$UKI"

# Buildroot's helper: runs genimage with the right paths (cwd is Buildroot's).
support/scripts/genimage.sh -c "$BOARD_DIR/genimage.cfg"

for f in bzImage rootfs.cpio.gz disk.img "mxrack-$BOARD-$VERSION.mxb"; do
    [ -e "$BINARIES_DIR/$f" ] && echo "mxrack image: $f $(du -h --apparent-size "$BINARIES_DIR/$f" | cut -f1)"
done
exit 0
