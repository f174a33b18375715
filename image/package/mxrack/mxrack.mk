################################################################################
#
# mxrack
#
################################################################################

MXRACK_VERSION = 0.1.0
MXRACK_SITE = $(BR2_EXTERNAL_MXRACK_PATH)/..
MXRACK_SITE_METHOD = local
MXRACK_LICENSE = MIT or Apache-2.0
# The binary crate of the workspace; Cargo.lock is at the top of the tree.
MXRACK_SUBDIR = firmware/mxrack
MXRACK_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/image/out --exclude=/hil-tests/work \
	--exclude=/mxrack-data --exclude=/data

# A static-pie binary, as the offline image build (image/build) makes it.
# Only the target gets crt-static: build scripts and proc-macros are host
# code (CARGO_TARGET_APPLIES_TO_HOST=false in the cargo infrastructure).
MXRACK_CARGO_ENV = \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-C target-feature=+crt-static"

# The download step vendors the dependencies of downloaded cargo packages
# only; a local site is rsynced instead. Vendor the locked dependencies here
# (host-rustc is built by now), so the build runs --offline --locked as for
# any cargo package.
define MXRACK_CARGO_VENDOR
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && $(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked --manifest-path Cargo.toml VENDOR \
		> $(@D)/.cargo/config.toml
endef
MXRACK_PRE_CONFIGURE_HOOKS += MXRACK_CARGO_VENDOR

$(eval $(cargo-package))
