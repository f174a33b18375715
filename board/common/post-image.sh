#!/bin/sh
# Buildroot post-image script of every mxrack board.
#   $1: the images directory; $2: the board (BR2_ROOTFS_POST_SCRIPT_ARGS)
# The kernel (bzImage) carries the initramfs and its command line and is an
# EFI program: it becomes EFI/BOOT/BOOTX64.EFI of the boot disk's EFI system
# partition, laid out by genimage (board/<board>/genimage.cfg) into disk.img.
set -eu

BINARIES_DIR=$1
BOARD=${2:?board name expected (BR2_ROOTFS_POST_SCRIPT_ARGS)}
BOARD_DIR=$(dirname "$(dirname "$(readlink -f "$0")")")/$BOARD

mkdir -p "$BINARIES_DIR/efi-part/EFI/BOOT"
cp "$BINARIES_DIR/bzImage" "$BINARIES_DIR/efi-part/EFI/BOOT/BOOTX64.EFI"

# Buildroot's helper: runs genimage with the right paths (cwd is Buildroot's).
support/scripts/genimage.sh -c "$BOARD_DIR/genimage.cfg"

for f in bzImage rootfs.cpio.gz disk.img; do
    [ -e "$BINARIES_DIR/$f" ] && echo "mxrack image: $f $(du -h --apparent-size "$BINARIES_DIR/$f" | cut -f1)"
done
exit 0
