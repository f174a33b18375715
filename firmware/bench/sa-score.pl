#!/usr/bin/perl
# SpamAssassin beside mxrack in firmware/bench/spam-corpus.sh (issue 16),
# through Mail::SpamAssassin's own API (what `spamassassin -L -t` and
# `sa-learn` run), so the rules are compiled once per process.
#   sa-score.pl learn CONFIGDIR ham|spam FILE...   learn each file
#   sa-score.pl score CONFIGDIR KEYPREFIX FILE...  print "folder/file<TAB>score"
# CONFIGDIR is private: its site/ holds the .pre plugin loads copied from
# /etc/spamassassin and local.cf (Bayes on, its database in CONFIGDIR/bayes,
# no auto-learning, no network); nothing under /etc is read or written.
# Network tests are off (local_tests_only, as `-L`). Each message is prepared
# as the mxrack benchmark prepares it: the mbox "From " line dropped.
use strict;
use warnings;
use Mail::SpamAssassin;

my ($mode, $dir, $what, @files) = @ARGV;
die "usage: $0 learn|score CONFIGDIR ham|spam|- FILE...\n" unless $mode && $dir && defined $what;
my $sa = Mail::SpamAssassin->new({
    local_tests_only     => 1,
    dont_copy_prefs      => 1,
    site_rules_filename  => "$dir/site",
    userprefs_filename   => "$dir/user_prefs",
    userstate_dir        => "$dir/state",
    home_dir_for_helpers => $dir,
    PREFIX               => '/usr',
    DEF_RULES_DIR        => '/usr/share/spamassassin',
    LOCAL_RULES_DIR      => "$dir/site",
    LOCAL_STATE_DIR      => "$dir/state",
});
$sa->compile_now(0, 1);
if ($mode eq 'learn') {
    $sa->init_learner({ caller_will_untie => 1, no_relearn => 0 });
}

sub read_message {
    my ($file) = @_;
    open(my $fh, '<', $file) or die "$file: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;
    $text =~ s/\AFrom [^\n]*\n//;
    return $text;
}

$| = 1;
for my $file (@files) {
    my $mail = $sa->parse(read_message($file));
    if ($mode eq 'learn') {
        my $status = $sa->learn($mail, undef, $what eq 'spam' ? 1 : 0, 0);
        $status->finish();
    } else {
        my $status = $sa->check($mail);
        my $key = $file;
        $key =~ s{.*/([^/]+/[^/]+)$}{$1};
        printf "%s\t%.3f\n", $key, $status->get_score();
        $status->finish();
    }
    $mail->finish();
}
if ($mode eq 'learn') {
    $sa->rebuild_learner_caches();
    $sa->finish_learner();
}
$sa->finish();
