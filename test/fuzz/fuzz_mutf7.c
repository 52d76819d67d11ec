/*
 * libFuzzer target: modified UTF-7 names from a hostile server and UTF-8
 * names from a configuration. Whatever decodes must encode back to the
 * same bytes, and whatever encodes must decode back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/mutf7.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, *d, *e;

	if (size > 4096)
		return 0;
	s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	d = mutf7_decode(s);
	if (d != NULL) {
		e = mutf7_encode(d);
		if (e == NULL || strcmp(e, s) != 0)
			abort();
		free(e);
		free(d);
	}
	e = mutf7_encode(s);
	if (e != NULL) {
		d = mutf7_decode(e);
		if (d == NULL || strcmp(d, s) != 0)
			abort();
		free(d);
		free(e);
	}
	free(s);
	return 0;
}
