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

# The keyring of update bundles (A/B updates): the public half of the
# signing key post-image.sh signs with (MXRACK_SIGNING_KEY, default the
# development key image/keys/development.key, made when missing), and every
# key in MXRACK_TRUST_KEYS (space-separated *.pub files).
key=${MXRACK_SIGNING_KEY:-$REPO/image/keys/development.key}
if [ -z "${MXRACK_SIGNING_KEY:-}" ] && [ ! -e "$key" ]; then
    mkdir -p "$REPO/image/keys"
    "$TARGET_DIR/usr/bin/mxrack" update keygen --out "${key%.key}"
fi
mkdir -p "$TARGET_DIR/etc/mxrack/update-keys"
"$TARGET_DIR/usr/bin/mxrack" update pubkey "$key" >"$TARGET_DIR/etc/mxrack/update-keys/signing.pub"
i=0
for k in ${MXRACK_TRUST_KEYS:-}; do
    cp "$k" "$TARGET_DIR/etc/mxrack/update-keys/trusted-$i.pub"
    i=$((i + 1))
done

mkdir -p "$TARGET_DIR/data"
