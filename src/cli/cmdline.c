/*
 * cmdline: commands without a shell where they need none (see
 * idlefetch/cmdline.h).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idlefetch/cmdline.h"
#include "idlefetch/util.h"

/* Length of "${NAME}" at p, or 0 when p does not start one. */
static size_t
variable(const char *p)
{
	size_t n = 2;

	if (p[0] != '$' || p[1] != '{' ||
	    !(isalpha((unsigned char)p[2]) || p[2] == '_'))
		return 0;
	while (isalnum((unsigned char)p[n]) || p[n] == '_')
		n++;
	return p[n] == '}' ? n + 1 : 0;
}

/* Appends n bytes to the growing word *w (length *len). */
static void
append(char **w, size_t *len, const char *p, size_t n)
{
	*w = xrealloc(*w, *len + n + 1);
	memcpy(*w + *len, p, n);
	*len += n;
	(*w)[*len] = '\0';
}

static char
needs_shell(const char *cmd, bool env)
{
	for (const char *p = cmd; *p; p++) {
		size_t v = env ? variable(p) : 0;

		if (v > 0)
			p += v - 1;
		else if (strchr(CMDLINE_SHELL_CHARS, *p) != NULL)
			return *p;
	}
	return 0;
}

char **
cmdline_split(const char *cmd, bool env, char *bad)
{
	char **argv = NULL, *w = NULL;
	size_t n = 0, len = 0;
	char c = needs_shell(cmd, env);

	if (bad)
		*bad = c;
	if (c != 0)
		return NULL;
	for (const char *p = cmd;; p++) {
		size_t v = env ? variable(p) : 0;

		if (*p == '\0' || *p == ' ' || *p == '\t') {
			if (w != NULL) {
				argv = xrealloc(argv, (n + 2) * sizeof(*argv));
				argv[n++] = w;
				argv[n] = NULL;
				w = NULL;
				len = 0;
			}
			if (*p == '\0')
				break;
		} else if (v > 0) {
			char *name = xstrndup(p + 2, v - 3);
			const char *val = getenv(name);

			free(name);
			append(&w, &len, val ? val : "", val ? strlen(val) : 0);
			p += v - 1;
		} else {
			append(&w, &len, p, 1);
		}
	}
	return argv;
}

void
cmdline_free(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

/* Whether prog runs as a program: a path to one, or found on PATH. */
static bool
found(const char *prog)
{
	const char *path = getenv("PATH"), *p, *e;

	if (strchr(prog, '/') != NULL)
		return access(prog, X_OK) == 0;
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p; p = *e ? e + 1 : e) {
		char *full;
		bool ok;

		e = strchr(p, ':');
		if (e == NULL)
			e = p + strlen(p);
		full = xasprintf("%.*s/%s", (int)(e - p), p, prog);
		ok = e > p && access(full, X_OK) == 0;
		free(full);
		if (ok)
			return true;
	}
	return false;
}

char **
cmdline_shell_free(const char *cmd)
{
	char **argv = cmdline_split(cmd, true, NULL);

	if (argv != NULL && !found(argv[0])) {
		cmdline_free(argv);
		return NULL;
	}
	return argv;
}
