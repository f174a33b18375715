#!/bin/sh
# Buildroot post-build script of every mxrack board.
#   $1: the target directory; $2: the board (BR2_ROOTFS_POST_SCRIPT_ARGS)
# Writes /etc/mxrack/mxrack.toml (board/common/mxrack.toml plus the services
# the binary offers, validated by mxrack itself) and /etc/mxrack/release.
# image/build does the same for the offline image.
set -eu

TARGET_DIR=$1
BOARD=${2:?board name expected (BR2_ROOTFS_POST_SCRIPT_ARGS)}
COMMON=$(dirname "$(readlink -f "$0")")
REPO=$(dirname "$(dirname "$COMMON")")

"$COMMON/render-config" "$COMMON/mxrack.toml" "$TARGET_DIR/usr/bin/mxrack" \
    "$TARGET_DIR/etc/mxrack/mxrack.toml"

version=$("$TARGET_DIR/usr/bin/mxrack" --version 2>/dev/null || echo "mxrack")
revision=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
{
    echo "$version ($revision), board $BOARD, Buildroot build"
    for k in "$TARGET_DIR"/lib/modules/*; do [ -e "$k" ] && echo "kernel ${k##*/}"; done
} >"$TARGET_DIR/etc/mxrack/release"

mkdir -p "$TARGET_DIR/data"
