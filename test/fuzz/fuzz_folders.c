/*
 * libFuzzer target: the folders a hostile server lists under folders = *,
 * and exclude patterns from a configuration. Input: a pattern, a NUL, then
 * listed names separated by newlines (the first byte of each is its
 * delimiter). Whatever is added must be a name the configuration itself
 * would accept, listed once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/folders.h"
#include "idlefetch/foldername.h"
#include "idlefetch/mutf7.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const named[] = { "INBOX" };
	struct account a = { .folders = (char **)named, .nfolders = 1,
		.subscribed = true, .move_to = "Archive" };
	struct folder_set fs;
	char *text, *pat, *rest, *line, *save = NULL, why[512];

	if (size > 8192)
		return 0;
	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	pat = text;
	rest = memchr(text, '\0', size);
	rest = rest ? rest + 1 : text + size;
	if (utf8_valid(pat)) {
		a.exclude = &pat;
		a.nexclude = 1;
	}
	folders_init(&fs, &a);
	for (line = strtok_r(rest, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char delim = line[0];
		size_t before = fs.n;

		if (delim == '\0')
			continue;
		if (folders_add(&fs, &a, line + 1, delim, 0, why,
			sizeof(why)) == FOLDERS_ADDED) {
			char *w = mutf7_wire_name(fs.names[before]);

			if (fs.n != before + 1 || w == NULL ||
			    strcmp(w, line + 1) != 0 ||
			    !folder_ok(fs.names[before], why,
				sizeof(why)))
				abort();
			free(w);
			for (size_t i = 0; i < before; i++)
				if (folder_same(fs.names[i],
					fs.names[before]))
					abort();
		}
		(void)folders_excluded(&a, line + 1, delim);
	}
	folders_free(&fs);
	free(text);
	return 0;
}
