/*
 * mutf7: modified UTF-7 mailbox names (see idlefetch/mutf7.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/mutf7.h"
#include "idlefetch/util.h"

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/*
 * Reads one code point from *p, moving *p past it; -1 on a malformed,
 * overlong or surrogate sequence. C0 and C1 controls are refused as well:
 * no folder name needs them.
 */
static int32_t
utf8_next(const unsigned char **p)
{
	const unsigned char *s = *p;
	uint32_t cp;
	int n;

	if (s[0] < 0x80) {
		*p = s + 1;
		return s[0] < 0x20 || s[0] == 0x7f ? -1 : s[0];
	}
	if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		n = 1;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		n = 2;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		n = 3;
	} else {
		return -1;
	}
	for (int i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
	    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0)
		return -1;
	*p = s + n + 1;
	return (int32_t)cp;
}

bool
utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p)
		if (utf8_next(&p) < 0)
			return false;
	return true;
}

static void
put_utf8(char **o, uint32_t cp)
{
	unsigned char *u = (unsigned char *)*o;

	if (cp < 0x80) {
		*u++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*u++ = (unsigned char)(0xc0 | (cp >> 6));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*u++ = (unsigned char)(0xe0 | (cp >> 12));
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else {
		*u++ = (unsigned char)(0xf0 | (cp >> 18));
		*u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	}
	*o = (char *)u;
}

char *
mutf7_encode(const char *utf8)
{
	const unsigned char *p = (const unsigned char *)utf8;
	/* Worst case: one code point (4 bytes) as "&" + 6 sextets + "-". */
	char *out = xmalloc(strlen(utf8) * 3 + 3), *o = out;
	uint32_t bits = 0;
	int nbits = 0;
	bool run = false;

	while (*p) {
		int32_t cp = utf8_next(&p);
		uint16_t units[2];
		int nunits;

		if (cp < 0) {
			free(out);
			return NULL;
		}
		if (cp < 0x7f) {
			if (run) {
				if (nbits > 0)
					*o++ = b64[(bits << (6 - nbits)) & 0x3f];
				*o++ = '-';
				run = false;
				bits = 0;
				nbits = 0;
			}
			*o++ = (char)cp;
			if (cp == '&')
				*o++ = '-';
			continue;
		}
		if (!run) {
			*o++ = '&';
			run = true;
		}
		if (cp >= 0x10000) {
			units[0] = (uint16_t)(0xd800 + ((cp - 0x10000) >> 10));
			units[1] = (uint16_t)(0xdc00 + ((cp - 0x10000) & 0x3ff));
			nunits = 2;
		} else {
			units[0] = (uint16_t)cp;
			nunits = 1;
		}
		for (int i = 0; i < nunits; i++) {
			bits = (bits << 16) | units[i];
			nbits += 16;
			while (nbits >= 6) {
				nbits -= 6;
				*o++ = b64[(bits >> nbits) & 0x3f];
			}
			bits &= (1u << nbits) - 1;
		}
	}
	if (run) {
		if (nbits > 0)
			*o++ = b64[(bits << (6 - nbits)) & 0x3f];
		*o++ = '-';
	}
	*o = '\0';
	return out;
}

static int
b64_value(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;

	return p ? (int)(p - b64) : -1;
}

char *
mutf7_decode(const char *s)
{
	/* Each sextet is at most 3/4 of a UTF-16 unit's 3 UTF-8 bytes. */
	char *out = xmalloc(strlen(s) * 2 + 1), *o = out;

	bool after_run = false;

	while (*s) {
		unsigned char c = (unsigned char)*s;
		uint32_t bits = 0, high = 0;
		int nbits = 0;
		bool any = false;

		if (c < 0x20 || c >= 0x7f)
			goto bad;
		if (c != '&') {
			*o++ = (char)c;
			s++;
			after_run = false;
			continue;
		}
		s++;
		if (*s == '-') { /* "&-" is '&' */
			*o++ = '&';
			s++;
			after_run = false;
			continue;
		}
		/* Two runs in a row are one run written twice: not canonical. */
		if (after_run)
			goto bad;
		for (; *s && *s != '-'; s++) {
			int v = b64_value(*s);
			uint32_t u;

			if (v < 0)
				goto bad;
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			if (nbits < 16)
				continue;
			nbits -= 16;
			u = (bits >> nbits) & 0xffff;
			bits &= (1u << nbits) - 1;
			any = true;
			if (high) {
				if (u < 0xdc00 || u > 0xdfff)
					goto bad;
				put_utf8(&o,
				    0x10000 + ((high - 0xd800) << 10) +
					(u - 0xdc00));
				high = 0;
			} else if (u >= 0xd800 && u <= 0xdbff) {
				high = u;
			} else if (u >= 0xdc00 && u <= 0xdfff) {
				goto bad;
			} else if (u < 0xa0) {
				/* ASCII stands for itself; no controls. */
				goto bad;
			} else {
				put_utf8(&o, u);
			}
		}
		/* Closed, not empty, no lone surrogate, only zero padding. */
		if (*s != '-' || !any || high || nbits >= 6 || bits != 0)
			goto bad;
		s++;
		after_run = true;
	}
	*o = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

char *
mutf7_wire_name(const char *name)
{
	char *d = mutf7_decode(name);

	if (d != NULL) {
		free(d);
		return xstrdup(name);
	}
	return mutf7_encode(name);
}
