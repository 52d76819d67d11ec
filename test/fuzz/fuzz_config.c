/*
 * libFuzzer target: the configuration parser on any file content. A file
 * is either refused with an error that names it, or loaded and freed
 * whole.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idlefetch/config.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct config *cfg = NULL;
	char err[1024];
	FILE *fp;

	if (size > 16384)
		return 0;
	if (path[0] == '\0')
		snprintf(path, sizeof(path), "/tmp/fuzz_config.%ld.conf",
		    (long)getpid());
	fp = fopen(path, "w");
	if (fp == NULL)
		abort();
	if (fwrite(data, 1, size, fp) != size || fclose(fp) != 0)
		abort();
	err[0] = '\0';
	if (config_parse_file(path, &cfg, err, sizeof(err)) == 0) {
		config_free(cfg);
	} else if (strstr(err, path) == NULL) {
		abort(); /* an error that does not name the file */
	}
	return 0;
}
