#!/bin/sh
# Installs the Debian packages idlefetch needs to build and run its tests, if
# missing (with --test, also what the compatibility tests need; and those
# named in $EXTRA).
set -eu
# What Courier-IMAP and Cyrus IMAP need at run time: the compatibility tests
# run them from packages unpacked into the cache (test/lib/servers.py),
# since installing either would remove dovecot-imapd.
SERVER_LIBS="perl e2fsprogs libcourier-unicode4 libgamin0 libgdbm6
libglib2.0-0 libgnutls30 libidn12 libltdl7 libpam0g libpcre3 libclamav12
libcom-err2 libical3 libicu72 libjansson4 libkrb5-3 libldap-2.5-0 libpq5
libsasl2-2 libsasl2-modules libsqlite3-0 libwrap0 libxapian30 libxml2
libzephyr4"
PKGS="build-essential cmake pkg-config libuv1-dev libssl-dev
libinih-dev libcmocka-dev libetpan-dev libjson-c-dev dovecot-imapd dovecot-lmtpd python3 openssl
ca-certificates procps iproute2 ${EXTRA:-}"
# prometheus: test_metrics scrapes the daemon with a real one (its own
# configuration, storage and port; the packaged service is not used).
# notmuch: test_hook.py's on_delivery = notmuch new.
[ "${1:-}" = "--test" ] && PKGS="$PKGS $SERVER_LIBS prometheus notmuch"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# Dovecot's packages must not start the system service: the tests run their own.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
	$missing >/dev/null
