/*
 * libFuzzer target: the framer fed a server stream in random chunk sizes,
 * with every unit parsed by proto as the session does.
 */
#include <stdint.h>
#include <string.h>

#include "idlefetch/framer.h"
#include "idlefetch/proto.h"

static int
begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	return len > 8 && memmem(prefix, len, "BODY[]", 6) != NULL;
}

static int
data(void *ud, const char *p, size_t n)
{
	return 0;
}

static int
end(void *ud)
{
	return 0;
}

static int
unit(void *ud, const char *p, size_t n)
{
	struct proto_resp r;

	proto_parse(p, n, false, &r);
	return 0;
}

static const struct framer_ops ops = { begin, data, end, unit };

int
LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
	struct framer *f = framer_new(&ops, NULL);
	size_t off = 0, step = size ? 1 + buf[0] % 64 : 1;

	while (off < size) {
		size_t n = size - off < step ? size - off : step;

		if (framer_push(f, (const char *)buf + off, n) != 0)
			break;
		off += n;
	}
	framer_free(f);
	return 0;
}
