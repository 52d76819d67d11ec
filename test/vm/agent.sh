#!/bin/sh
# The guest's end of the test channel (vm.py): reads "N TIMEOUT BASE64" lines
# from ttyS1, runs each decoded script as root with /bin/sh, and answers
# "BEGIN N", the output (stdout and stderr) in base64 on one line, and
# "END N STATUS". A script that outlives its TIMEOUT is killed (status 124).
tty=/dev/ttyS1
stty -F $tty raw -echo || exit 1
exec <$tty >$tty 2>/dev/null
cd /run/vmtest || exit 1
echo "AGENT READY"
while read -r n t data; do
	printf '%s' "$data" | base64 -d >cmd.sh
	timeout -k 5 "$t" /bin/sh cmd.sh >out 2>&1 </dev/null
	rc=$?
	echo "BEGIN $n"
	base64 -w0 out
	echo
	echo "END $n $rc"
done
