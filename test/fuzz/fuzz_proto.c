/*
 * libFuzzer target: proto_parse on arbitrary units. The framer hands proto
 * only complete units that end in CRLF with bodies replaced by "{0}", so the
 * input is shaped the same way; anything may come back except a crash, a
 * leak or undefined behaviour.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/proto.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_resp r;
	char *unit;

	if (size > 65536)
		return 0;
	unit = malloc(size + 2);
	memcpy(unit, data, size);
	memcpy(unit + size, "\r\n", 2);
	proto_parse(unit, size + 2, size > 0 && data[0] == 'G', &r);
	free(unit);
	return 0;
}
