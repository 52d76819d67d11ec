#!/bin/sh
# Installs the Debian packages idlefetch needs to build and test, if missing
# (and those named in $EXTRA).
set -eu
PKGS="build-essential cmake pkg-config libuv1-dev libssl-dev
libinih-dev libcmocka-dev dovecot-imapd dovecot-lmtpd python3 openssl
ca-certificates procps iproute2 ${EXTRA:-}"
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
