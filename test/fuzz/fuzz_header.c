/*
 * libFuzzer target: header_parse(), libetpan's envelope parser behind
 * idlefetch's guard, on any bytes a message or a server may hold. The
 * corpus starts with the inputs that crash libetpan's other parsers and
 * the unguarded envelope parser (../shared/LIBETPAN.md). What it returns
 * must be a usable key part: a printable Message-ID in angle brackets;
 * and header_return_path()'s sender must be plain ASCII without spaces
 * or angle brackets (it goes into an LMTP command and an MDA's argv).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/header.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct header_info h;
	char sender[HEADER_SENDER_MAX];
	size_t n;

	if (size > HEADER_MAX + 4096)
		return 0;
	(void)header_parse((const char *)data, size, &h);
	n = strlen(h.msgid);
	if (n > 0 && (h.msgid[0] != '<' || h.msgid[n - 1] != '>'))
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)h.msgid[i] <= 0x20 ||
		    (unsigned char)h.msgid[i] >= 0x7f)
			abort();
	(void)header_key(&h);
	if (header_return_path((const char *)data, size, sender) != 0 &&
	    sender[0] != '\0')
		abort();
	for (const char *p = sender; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
		    *p == '<' || *p == '>')
			abort();
	return 0;
}
