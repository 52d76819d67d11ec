/*
 * httpd: a minimal HTTP/1.1 endpoint on the caller's libuv loop that
 * answers GET on one path with a body the owner renders, for metrics.
 *
 * Every cost a client can cause is capped: at most HTTPD_CLIENTS at a time
 * (more are accepted and closed at once), HTTPD_REQUEST_MAX bytes of
 * request head (more: 431), HTTPD_DEADLINE_MS to send the request and as
 * long again to read the answer (then closed), one request per connection
 * (Connection: close). Its handles never keep the loop alive.
 */
#ifndef IDLEFETCH_HTTPD_H
#define IDLEFETCH_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define HTTPD_CLIENTS 16
#define HTTPD_REQUEST_MAX 4096
#define HTTPD_DEADLINE_MS 5000

struct httpd;
struct uv_loop_s;

/*
 * The body for a GET of the path (on the heap: the server frees it after
 * the write), its length in *len.
 */
typedef char *httpd_get_cb(void *ud, size_t *len);

/*
 * Listens on addr and serves GET path with get(ud, ...). 0 with *out
 * set, or a negative errno (libuv's) with nothing left open. path is
 * borrowed and must outlive the server.
 */
int httpd_new(struct uv_loop_s *loop, const struct sockaddr *addr,
    const char *path, httpd_get_cb *get, void *ud, struct httpd **out);
/*
 * Closes the listener and every client: no callback runs after this
 * returns; the memory goes once the loop has run the close callbacks.
 */
void httpd_free(struct httpd *h);
/* The port listened on (useful after binding port 0). */
unsigned httpd_port(const struct httpd *h);
/* Clients closed at accept because HTTPD_CLIENTS were connected. */
uint64_t httpd_refused(const struct httpd *h);

/*
 * "ADDRESS:PORT", "[IPV6]:PORT" or a bare "PORT" (127.0.0.1): 0 with *ss
 * set, or -EINVAL with the reason in why. Numeric addresses only: no DNS
 * at start.
 */
int httpd_parse_address(const char *v, struct sockaddr_storage *ss, char *why,
    size_t len);

#endif
