/*
 * Unit tests for tls: a client from tls_new() against an OpenSSL server in
 * this process, joined by memory, with OpenSSL's allocations counted
 * (CRYPTO_set_mem_functions): what an idle connection keeps, that it
 * still works after idling, and what the system's trust store costs and
 * still refuses.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "idlefetch/tls.h"
#include "idlefetch/util.h"

/* ---- counting OpenSSL's heap ------------------------------------------- */

static size_t live_bytes, live_blocks, live_bios;

/*
 * Each block carries its size in front, and whether it is a BIO (made in
 * OpenSSL's bio_lib.c), kept 16-byte aligned.
 */
#define HDR 16

static int
is_bio(const char *file)
{
	size_t n = file ? strlen(file) : 0;

	return n >= 9 && strcmp(file + n - 9, "bio_lib.c") == 0;
}

static void *
count_malloc(size_t n, const char *file, int line)
{
	unsigned char *p = malloc(n + HDR);
	int bio = is_bio(file);

	if (p == NULL)
		return NULL;
	memcpy(p, &n, sizeof(n));
	memcpy(p + sizeof(n), &bio, sizeof(bio));
	live_bytes += n;
	live_blocks++;
	live_bios += bio;
	return p + HDR;
}

static void
count_free(void *ptr, const char *file, int line)
{
	unsigned char *p = ptr;
	size_t n;
	int bio;

	if (p == NULL)
		return;
	memcpy(&n, p - HDR, sizeof(n));
	memcpy(&bio, p - HDR + sizeof(n), sizeof(bio));
	live_bytes -= n;
	live_blocks--;
	live_bios -= bio;
	free(p - HDR);
}

static void *
count_realloc(void *ptr, size_t n, const char *file, int line)
{
	unsigned char *p = ptr, *q;
	size_t was;

	if (p == NULL)
		return count_malloc(n, file, line);
	memcpy(&was, p - HDR, sizeof(was));
	q = realloc(p - HDR, n + HDR);
	if (q == NULL)
		return NULL;
	memcpy(q, &n, sizeof(n));
	live_bytes += n - was;
	return q + HDR;
}

/* ---- a CA, a server certificate, a server ------------------------------ */

static char ca_path[] = "/tmp/idlefetch-tls-test-XXXXXX";
static EVP_PKEY *ca_key, *srv_key;
static X509 *ca_crt, *srv_crt;
static SSL_CTX *srv_ctx;

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v;
	X509_EXTENSION *e;

	X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* issuer NULL: self-signed CA. As the integration tests' certificates. */
static X509 *
make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *signer, const char *cn)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	if (issuer == NULL) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_subject_key_identifier, "hash");
	} else {
		add_ext(x, issuer, NID_subject_alt_name,
		    "DNS:localhost,IP:127.0.0.1");
		add_ext(x, issuer, NID_authority_key_identifier, "keyid");
	}
	assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
	return x;
}

/* Whether OpenSSL knew its reason texts once a client context was made. */
static int texts_at_start;

static int
have_reason_texts(void)
{
	return ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0,
		   SSL_R_WRONG_VERSION_NUMBER)) != NULL;
}

static int
setup(void **state)
{
	FILE *fp;
	int fd = mkstemp(ca_path);
	unsigned char pin[TLS_PIN_LEN] = { 0 };
	char err[256];
	SSL_CTX *ctx;

	assert_true(fd >= 0);
	/* The first context in the process, as in the daemon. */
	ctx = tls_ctx_new(NULL, pin, err, sizeof(err));
	assert_non_null(ctx);
	texts_at_start = have_reason_texts();
	SSL_CTX_free(ctx);
	ca_key = EVP_EC_gen("P-256");
	srv_key = EVP_EC_gen("P-256");
	ca_crt = make_cert(ca_key, NULL, ca_key, "idlefetch test CA");
	srv_crt = make_cert(srv_key, ca_crt, ca_key, "server");
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, ca_crt), 1);
	assert_int_equal(fclose(fp), 0);
	srv_ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(srv_ctx);
	assert_int_equal(SSL_CTX_use_certificate(srv_ctx, srv_crt), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(srv_ctx, srv_key), 1);
	/* Stateless tickets only, as a server that sends them does. */
	SSL_CTX_set_session_cache_mode(srv_ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

static int
teardown(void **state)
{
	SSL_CTX_free(srv_ctx);
	X509_free(srv_crt);
	X509_free(ca_crt);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(ca_key);
	unlink(ca_path);
	return 0;
}

/* ---- one client and its server, joined by memory ----------------------- */

struct pair {
	struct tls *c;
	SSL *s;
	BIO *s_in, *s_out; /* the server's ends */
};

static void
pair_new(struct pair *p, SSL_CTX *ctx)
{
	p->c = tls_new(ctx, "localhost");
	p->s = SSL_new(srv_ctx);
	p->s_in = BIO_new(BIO_s_mem());
	p->s_out = BIO_new(BIO_s_mem());
	assert_true(p->s && p->s_in && p->s_out);
	BIO_set_mem_eof_return(p->s_in, -1);
	SSL_set_bio(p->s, p->s_in, p->s_out);
	SSL_set_accept_state(p->s);
}

/* Moves what is in flight both ways; whether anything moved. */
static int
pump(struct pair *p)
{
	char *out, buf[16384];
	size_t n = tls_take(p->c, &out);
	int moved = n > 0, m;

	if (n > 0) {
		assert_int_equal(BIO_write(p->s_in, out, (int)n), (int)n);
		free(out);
	}
	if (!SSL_is_init_finished(p->s))
		SSL_do_handshake(p->s);
	while ((m = BIO_read(p->s_out, buf, sizeof(buf))) > 0) {
		tls_feed(p->c, buf, (size_t)m);
		moved = 1;
	}
	return moved;
}

/* The client's handshake until it ends: 0, or IDLEFETCH_ETLS with err. */
static int
try_handshake(struct pair *p, char *err, size_t errlen)
{
	int r = 1;

	for (int i = 0; i < 20 && r == 1; i++) {
		r = tls_handshake(p->c, err, errlen);
		pump(p);
	}
	return r;
}

static void
handshake(struct pair *p)
{
	char err[256] = "";

	assert_int_equal(try_handshake(p, err, sizeof(err)), 0);
	for (int i = 0; i < 20 && !SSL_is_init_finished(p->s); i++)
		pump(p);
	assert_true(SSL_is_init_finished(p->s));
}

/* The server says line; the client reads it (and any tickets before it). */
static void
server_says(struct pair *p, const char *line)
{
	char buf[256];
	size_t got = 0;
	ssize_t n;

	assert_int_equal(SSL_write(p->s, line, (int)strlen(line)),
	    (int)strlen(line));
	for (int i = 0; i < 20 && got < strlen(line); i++) {
		pump(p);
		n = tls_read(p->c, buf + got, sizeof(buf) - got);
		assert_true(n >= 0);
		got += (size_t)n;
	}
	assert_int_equal(got, strlen(line));
	assert_memory_equal(buf, line, got);
	/* Drained: a further read finds nothing and keeps nothing. */
	assert_int_equal(tls_read(p->c, buf, sizeof(buf)), 0);
}

/* The server reads line, which the client has written. */
static void
server_hears(struct pair *p, const char *line)
{
	char buf[256];
	int n = 0;

	for (int i = 0; i < 20 && n <= 0; i++) {
		pump(p);
		n = SSL_read(p->s, buf, sizeof(buf));
	}
	assert_int_equal(n, (int)strlen(line));
	assert_memory_equal(buf, line, strlen(line));
}

static void
client_says(struct pair *p, const char *line)
{
	char buf[256];
	int n = 0;

	assert_int_equal(tls_write(p->c, line, strlen(line)), 0);
	for (int i = 0; i < 20 && n <= 0; i++) {
		pump(p);
		n = SSL_read(p->s, buf, sizeof(buf));
	}
	assert_int_equal(n, (int)strlen(line));
	assert_memory_equal(buf, line, strlen(line));
}

/* Up to IDLE, as an IMAP session: greeting, tickets, a command, "+". */
static void
to_idle(struct pair *p)
{
	handshake(p);
	server_says(p, "* OK IMAP4rev1 ready\r\n");
	client_says(p, "a1 IDLE\r\n");
	server_says(p, "+ idling\r\n");
}

#define NCONN 50
/*
 * Bytes an idle connection may keep: 17,125 measured with OpenSSL 3.0.19
 * (X25519, TLS_AES_256_GCM_SHA384): the SSL object 7.6 KB, the two
 * AES-GCM contexts 1.9 KB, the session 0.9 KB, the server's certificate
 * as parsed, key shares, per-object locks. Record buffers kept while idle
 * (51 KB without SSL_MODE_RELEASE_BUFFERS) or a P-256 key share (2.6 KB)
 * go past it.
 */
#define TLS_TEST_IDLE_MAX 20000

/*
 * What an idle TLS connection keeps of OpenSSL's heap. The server ends are
 * freed before counting; the client's context, trust store included, is
 * shared by all and made before. Idle connections own no BIO (they share
 * one empty BIO, made by the first). A second round must cost the same (no
 * slow growth), and freeing them all gives everything back.
 */
static void
test_idle_connection_keeps_little_of_the_heap(void **state)
{
	static struct pair p[NCONN];
	char err[256];
	SSL_CTX *ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	size_t base, blocks, bios, per, per_blocks;

	assert_non_null(ctx);
	/* One first connection makes what OpenSSL caches for all (methods). */
	pair_new(&p[0], ctx);
	to_idle(&p[0]);
	SSL_free(p[0].s);
	tls_free(p[0].c);
	base = live_bytes;
	blocks = live_blocks;
	bios = live_bios;
	for (int i = 0; i < NCONN; i++) {
		pair_new(&p[i], ctx);
		to_idle(&p[i]);
		SSL_free(p[i].s);
	}
	per = (live_bytes - base) / NCONN;
	per_blocks = (live_blocks - blocks) / NCONN;
	print_message("an idle TLS connection keeps %zu bytes of OpenSSL's "
		      "heap in %zu blocks\n",
	    per, per_blocks);
	assert_true(per <= TLS_TEST_IDLE_MAX);
	assert_int_equal(live_bios, bios);
	for (int i = 0; i < NCONN; i++)
		tls_free(p[i].c);
	assert_int_equal(live_bytes, base);
	SSL_CTX_free(ctx);
}

/*
 * An idle connection that gave up what it could still works both ways,
 * for messages larger than a record, and still checks who it talks to.
 */
static void
test_idle_connection_still_carries_mail(void **state)
{
	char err[256], *big = malloc(70000), *got = malloc(70000);
	SSL_CTX *ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	struct pair p;
	size_t n = 0;
	ssize_t r;

	assert_true(ctx && big && got);
	pair_new(&p, ctx);
	to_idle(&p);
	for (size_t i = 0; i < 70000; i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(SSL_write(p.s, big, 70000), 70000);
	for (int i = 0; i < 100 && n < 70000; i++) {
		pump(&p);
		while ((r = tls_read(p.c, got + n, 70000 - n)) > 0)
			n += (size_t)r;
		assert_true(r >= 0);
	}
	assert_int_equal(n, 70000);
	assert_memory_equal(got, big, 70000);
	client_says(&p, "DONE\r\n");
	server_says(&p, "a1 OK IDLE done\r\n");
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
	free(big);
	free(got);
}

/*
 * Two idle connections (sharing the empty BIO) each get their own bytes,
 * both ways, and one whose server asks for a key update while it idles
 * answers it: what OpenSSL writes on its own goes to its own server.
 */
static void
test_idle_connections_keep_their_own_bytes(void **state)
{
	char err[256];
	SSL_CTX *ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	struct pair a, b;

	assert_non_null(ctx);
	pair_new(&a, ctx);
	pair_new(&b, ctx);
	to_idle(&a);
	to_idle(&b);
	assert_int_equal(SSL_key_update(a.s, SSL_KEY_UPDATE_REQUESTED), 1);
	server_says(&a, "* 1 EXISTS\r\n");
	server_says(&b, "* 2 EXISTS\r\n");
	/* Both write before either sends: each server gets its own line. */
	assert_int_equal(tls_write(a.c, "DONE a\r\n", 8), 0);
	assert_int_equal(tls_write(b.c, "DONE b\r\n", 8), 0);
	server_hears(&b, "DONE b\r\n");
	/* Read under the client's new key. */
	server_hears(&a, "DONE a\r\n");
	server_says(&b, "a1 OK IDLE done\r\n");
	server_says(&a, "a1 OK IDLE done\r\n");
	SSL_free(a.s);
	SSL_free(b.s);
	tls_free(a.c);
	tls_free(b.c);
	SSL_CTX_free(ctx);
}

/* ---- the system's trust store ------------------------------------------ */

#define SYSTEM_DIR "/etc/ssl/certs"

/*
 * A hashed directory as update-ca-certificates leaves /etc/ssl/certs: a
 * link to each of the machine's own entries, and with_ca, the test CA
 * under its subject hash. The path is written to dir.
 */
static void
make_cert_dir(char *dir, size_t len, int with_ca)
{
	char link[600], target[600];
	DIR *d;
	struct dirent *e;

	snprintf(dir, len, "/tmp/idlefetch-tls-dir-XXXXXX");
	assert_non_null(mkdtemp(dir));
	d = opendir(SYSTEM_DIR);
	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		snprintf(target, sizeof(target), SYSTEM_DIR "/%s", e->d_name);
		assert_int_equal(symlink(target, link), 0);
	}
	if (d != NULL)
		closedir(d);
	if (with_ca) {
		snprintf(link, sizeof(link), "%s/%08lx.0", dir,
		    X509_subject_name_hash(ca_crt));
		unlink(link); /* in the unlikely case of a clash */
		assert_int_equal(symlink(ca_path, link), 0);
	}
}

static void
remove_cert_dir(const char *dir)
{
	char path[600];
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

/* Trust as on a Debian system: SSL_CERT_DIR is dir, no SSL_CERT_FILE. */
static SSL_CTX *
system_ctx(const char *dir, size_t *cost)
{
	char err[256] = "";
	size_t before = live_bytes;
	SSL_CTX *ctx;

	assert_int_equal(setenv("SSL_CERT_DIR", dir, 1), 0);
	assert_int_equal(unsetenv("SSL_CERT_FILE"), 0);
	ctx = tls_ctx_new(NULL, NULL, err, sizeof(err));
	assert_non_null(ctx);
	if (cost != NULL)
		*cost = live_bytes - before;
	unsetenv("SSL_CERT_DIR");
	return ctx;
}

/*
 * Bytes a context with the system's trust may take before any handshake:
 * parsing the machine's bundle took 0.8 MiB; a context of its own is
 * about 30 KB.
 */
#define TLS_TEST_SYSTEM_CTX_MAX 65536

/*
 * Without ca_file, a context reads no certificate at start when the
 * system's directory is hashed, and a handshake finds the server's CA
 * there, as a user of a public provider trusts the system's store.
 */
static void
test_system_trust_reads_only_the_certificates_a_chain_needs(void **state)
{
	char dir[64];
	size_t cost;
	struct pair p;
	SSL_CTX *ctx;

	make_cert_dir(dir, sizeof(dir), 1);
	ctx = system_ctx(dir, &cost);
	print_message("a context trusting the system's store takes %zu "
		      "bytes of OpenSSL's heap before a handshake\n",
	    cost);
	assert_true(cost <= TLS_TEST_SYSTEM_CTX_MAX);
	pair_new(&p, ctx);
	to_idle(&p);
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
	remove_cert_dir(dir);
}

/* The same directory without the server's CA: refused, as before. */
static void
test_system_trust_refuses_a_ca_that_is_not_in_it(void **state)
{
	char dir[64], err[256] = "";
	struct pair p;
	SSL_CTX *ctx;

	make_cert_dir(dir, sizeof(dir), 0);
	ctx = system_ctx(dir, NULL);
	pair_new(&p, ctx);
	assert_int_equal(try_handshake(&p, err, sizeof(err)), IDLEFETCH_ETLS);
	assert_non_null(strstr(err,
	    "certificate verification failed: "
	    "unable to get local issuer certificate"));
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
	remove_cert_dir(dir);
}

/*
 * A directory without hashed names (a container that ships only the
 * bundle) and a bundle named in SSL_CERT_FILE: the bundle is trusted.
 */
static void
test_system_trust_falls_back_to_the_bundle(void **state)
{
	char dir[] = "/tmp/idlefetch-tls-dir-XXXXXX", err[256] = "";
	struct pair p;
	SSL_CTX *ctx;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(setenv("SSL_CERT_DIR", dir, 1), 0);
	assert_int_equal(setenv("SSL_CERT_FILE", ca_path, 1), 0);
	ctx = tls_ctx_new(NULL, NULL, err, sizeof(err));
	unsetenv("SSL_CERT_DIR");
	unsetenv("SSL_CERT_FILE");
	assert_non_null(ctx);
	pair_new(&p, ctx);
	to_idle(&p);
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
	rmdir(dir);
}

/*
 * OpenSSL's reason texts are not loaded at start (360 KiB of every
 * process), yet a failure is still reported in words: a plaintext IMAP
 * greeting where a TLS record was expected.
 */
static void
test_reason_texts_load_only_when_a_failure_is_reported(void **state)
{
	static const char greeting[] = "* OK IMAP4rev1 ready\r\n";
	char err[256] = "", *out;
	struct pair p;
	SSL_CTX *ctx;

	assert_false(texts_at_start);
	ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	assert_non_null(ctx);
	pair_new(&p, ctx);
	assert_int_equal(tls_handshake(p.c, err, sizeof(err)), 1);
	free(tls_take(p.c, &out) > 0 ? out : NULL);
	tls_feed(p.c, greeting, strlen(greeting));
	assert_int_equal(tls_handshake(p.c, err, sizeof(err)), IDLEFETCH_ETLS);
	print_message("%s\n", err);
	assert_true(strstr(err, "wrong version number") != NULL ||
	    strstr(err, "packet length too long") != NULL);
	assert_null(strstr(err, "error:"));
	assert_true(have_reason_texts());
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_connection_keeps_little_of_the_heap),
		cmocka_unit_test(test_idle_connection_still_carries_mail),
		cmocka_unit_test(test_idle_connections_keep_their_own_bytes),
		cmocka_unit_test(
		    test_system_trust_reads_only_the_certificates_a_chain_needs),
		cmocka_unit_test(
		    test_system_trust_refuses_a_ca_that_is_not_in_it),
		cmocka_unit_test(test_system_trust_falls_back_to_the_bundle),
		cmocka_unit_test(
		    test_reason_texts_load_only_when_a_failure_is_reported),
	};

	/* Before OpenSSL allocates anything. */
	if (CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) !=
	    1)
		return 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
