/*
 * proto: the only module that knows libetpan. It parses units that the
 * framer has already cut and checked (complete, sizes capped, message
 * bodies removed), because libetpan cannot tell incomplete input from a
 * short response and trusts literal sizes. What the session needs is copied
 * into a flat struct and the libetpan tree is freed at once.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "etpan_private.h"
#include "idlefetch/proto.h"
#include "idlefetch/util.h"

/* Keeps only printable ASCII so that server text is safe to log. */
static void
copy_text(char *dst, size_t cap, const char *src)
{
	size_t o = 0;

	if (src == NULL) {
		dst[0] = '\0';
		return;
	}
	for (; *src && o + 1 < cap; src++)
		dst[o++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
	dst[o] = '\0';
}

static uint32_t
caps_from(struct mailimap_capability_data *cd)
{
	static const struct { const char *name; uint32_t bit; } names[] = {
		{ "IMAP4rev1", CAP_IMAP4REV1 }, { "IDLE", CAP_IDLE },
		{ "STARTTLS", CAP_STARTTLS }, { "LOGINDISABLED", CAP_LOGINDISABLED },
		{ "SASL-IR", CAP_SASL_IR }, { "UIDPLUS", CAP_UIDPLUS },
		{ "MOVE", CAP_MOVE }, { "LITERAL+", CAP_LITERALPLUS },
	};
	uint32_t caps = 0;
	clistiter *it;

	if (cd == NULL || cd->cap_list == NULL)
		return 0;
	for (it = clist_begin(cd->cap_list); it; it = clist_next(it)) {
		struct mailimap_capability *c = clist_content(it);

		if (c->cap_type == MAILIMAP_CAPABILITY_AUTH_TYPE) {
			if (c->cap_data.cap_auth_type &&
			    strcasecmp(c->cap_data.cap_auth_type, "PLAIN") == 0)
				caps |= CAP_AUTH_PLAIN;
			continue;
		}
		if (c->cap_data.cap_name == NULL)
			continue;
		for (size_t i = 0; i < ARRAY_LEN(names); i++)
			if (strcasecmp(c->cap_data.cap_name, names[i].name) == 0)
				caps |= names[i].bit;
	}
	return caps;
}

static void
from_resp_text(struct mailimap_resp_text *t, struct proto_resp *out)
{
	struct mailimap_resp_text_code *code;

	if (t == NULL)
		return;
	copy_text(out->text, sizeof(out->text), t->rsp_text);
	code = t->rsp_code;
	if (code == NULL)
		return;
	switch (code->rc_type) {
	case MAILIMAP_RESP_TEXT_CODE_CAPABILITY_DATA:
		out->caps = caps_from(code->rc_data.rc_cap_data);
		out->has |= HAS_CAPS;
		break;
	case MAILIMAP_RESP_TEXT_CODE_UIDVALIDITY:
		out->uidvalidity = code->rc_data.rc_uidvalidity;
		out->has |= HAS_UIDVALIDITY;
		break;
	case MAILIMAP_RESP_TEXT_CODE_UIDNEXT:
		out->uidnext = code->rc_data.rc_uidnext;
		out->has |= HAS_UIDNEXT;
		break;
	case MAILIMAP_RESP_TEXT_CODE_READ_ONLY:
		out->has |= HAS_READONLY;
		break;
	default:
		break;
	}
}

static enum proto_status
cond_status(int t)
{
	switch (t) {
	case MAILIMAP_RESP_COND_STATE_OK:
		return PROTO_OK;
	case MAILIMAP_RESP_COND_STATE_NO:
		return PROTO_NO;
	case MAILIMAP_RESP_COND_STATE_BAD:
		return PROTO_BAD;
	default:
		return PROTO_NONE;
	}
}

static void
from_fetch(struct mailimap_msg_att *att, struct proto_resp *out)
{
	clistiter *it;

	out->has |= HAS_FETCH;
	if (att == NULL)
		return;
	for (it = clist_begin(att->att_list); it; it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);
		struct mailimap_msg_att_static *st;

		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
			continue;
		st = item->att_data.att_static;
		switch (st->att_type) {
		case MAILIMAP_MSG_ATT_UID:
			out->uid = st->att_data.att_uid;
			out->has |= HAS_UID;
			break;
		case MAILIMAP_MSG_ATT_RFC822_SIZE:
			out->size = st->att_data.att_rfc822_size;
			out->has |= HAS_SIZE;
			break;
		case MAILIMAP_MSG_ATT_BODY_SECTION:
		case MAILIMAP_MSG_ATT_RFC822:
			out->has |= HAS_BODY;
			break;
		default:
			break;
		}
	}
}

static void
from_response_data(struct mailimap_response_data *rd, struct proto_resp *out)
{
	struct mailimap_mailbox_data *mb;
	struct mailimap_message_data *md;

	switch (rd->rsp_type) {
	case MAILIMAP_RESP_DATA_TYPE_COND_STATE:
		out->status = cond_status(rd->rsp_data.rsp_cond_state->rsp_type);
		from_resp_text(rd->rsp_data.rsp_cond_state->rsp_text, out);
		break;
	case MAILIMAP_RESP_DATA_TYPE_COND_BYE:
		out->status = PROTO_BYE;
		from_resp_text(rd->rsp_data.rsp_bye->rsp_text, out);
		break;
	case MAILIMAP_RESP_DATA_TYPE_CAPABILITY_DATA:
		out->caps = caps_from(rd->rsp_data.rsp_capability_data);
		out->has |= HAS_CAPS;
		break;
	case MAILIMAP_RESP_DATA_TYPE_MAILBOX_DATA:
		mb = rd->rsp_data.rsp_mailbox_data;
		if (mb->mbd_type == MAILIMAP_MAILBOX_DATA_EXISTS) {
			out->exists = mb->mbd_data.mbd_exists;
			out->has |= HAS_EXISTS;
		}
		break;
	case MAILIMAP_RESP_DATA_TYPE_MESSAGE_DATA:
		md = rd->rsp_data.rsp_message_data;
		out->seq = md->mdt_number;
		if (md->mdt_type == MAILIMAP_MESSAGE_DATA_EXPUNGE)
			out->has |= HAS_EXPUNGE;
		else if (md->mdt_type == MAILIMAP_MESSAGE_DATA_FETCH)
			from_fetch(md->mdt_msg_att, out);
		break;
	default:
		break;
	}
}

/*
 * Reads "TAG SP (OK|NO|BAD) text" or "* BYE text" by hand, for lines that
 * libetpan rejects (unknown response codes) but whose meaning we must not
 * lose: a tagged reply completes a command whatever else it carries.
 */
static int
fallback(const char *unit, size_t len, struct proto_resp *out)
{
	char line[512], word[16];
	const char *sp;
	size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;

	memcpy(line, unit, n);
	line[n] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	sp = strchr(line, ' ');
	if (sp == NULL || (size_t)(sp - line) >= sizeof(out->tag))
		return IDLEFETCH_EPROTO;
	if (sscanf(sp + 1, "%15s", word) != 1)
		return IDLEFETCH_EPROTO;
	if (line[0] == '*' && sp == line + 1) {
		if (strcasecmp(word, "BYE") != 0)
			return IDLEFETCH_EPROTO;
		out->kind = PROTO_UNTAGGED;
		out->status = PROTO_BYE;
	} else {
		out->kind = PROTO_TAGGED;
		memcpy(out->tag, line, (size_t)(sp - line));
		out->tag[sp - line] = '\0';
		if (strcasecmp(word, "OK") == 0)
			out->status = PROTO_OK;
		else if (strcasecmp(word, "NO") == 0)
			out->status = PROTO_NO;
		else if (strcasecmp(word, "BAD") == 0)
			out->status = PROTO_BAD;
		else
			return IDLEFETCH_EPROTO;
	}
	copy_text(out->text, sizeof(out->text), sp + 1 + strlen(word));
	return IDLEFETCH_EPROTO;
}

static int
parse_greeting(MMAPString *s, struct proto_resp *out)
{
	struct mailimap_greeting *g = NULL;
	size_t indx = 0;

	out->kind = PROTO_GREETING;
	if (mailimap_greeting_parse(NULL, s, NULL, &indx, &g, 0, NULL) != 0)
		return IDLEFETCH_EPROTO;
	if (g->gr_type == MAILIMAP_GREETING_RESP_COND_BYE) {
		out->status = PROTO_BYE;
		from_resp_text(g->gr_data.gr_bye->rsp_text, out);
	} else {
		out->status = g->gr_data.gr_auth->rsp_type ==
		    MAILIMAP_RESP_COND_AUTH_PREAUTH ? PROTO_PREAUTH : PROTO_OK;
		from_resp_text(g->gr_data.gr_auth->rsp_text, out);
	}
	mailimap_greeting_free(g);
	return 0;
}

static int
parse_tagged(MMAPString *s, struct proto_resp *out)
{
	struct mailimap_parser_context ctx;
	struct mailimap_response *r = NULL;
	struct mailimap_response_tagged *t;
	size_t indx = 0;

	memset(&ctx, 0, sizeof(ctx));
	out->kind = PROTO_TAGGED;
	if (mailimap_response_parse(NULL, s, &ctx, &indx, &r, 0, NULL) != 0)
		return IDLEFETCH_EPROTO;
	if (r->rsp_resp_done->rsp_type != MAILIMAP_RESP_DONE_TYPE_TAGGED) {
		mailimap_response_free(r);
		return IDLEFETCH_EPROTO;
	}
	t = r->rsp_resp_done->rsp_data.rsp_tagged;
	if (strlen(t->rsp_tag) >= sizeof(out->tag)) {
		mailimap_response_free(r);
		return IDLEFETCH_EPROTO;
	}
	strcpy(out->tag, t->rsp_tag);
	out->status = cond_status(t->rsp_cond_state->rsp_type);
	from_resp_text(t->rsp_cond_state->rsp_text, out);
	mailimap_response_free(r);
	return 0;
}

int
proto_parse(const char *unit, size_t len, bool greeting, struct proto_resp *out)
{
	MMAPString s = { .str = (char *)unit, .len = len, .allocated_len = len,
	    .fd = -1 };
	struct mailimap_parser_context ctx;
	struct mailimap_response_data *rd = NULL;
	size_t indx = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (len < 3)
		return IDLEFETCH_EPROTO;
	if (greeting)
		return parse_greeting(&s, out);
	if (unit[0] == '+') {
		out->kind = PROTO_CONTINUE;
		copy_text(out->text, sizeof(out->text), unit + 1);
		out->text[strcspn(out->text, "\r\n")] = '\0';
		return 0;
	}
	if (unit[0] != '*') {
		r = parse_tagged(&s, out);
		return r == 0 ? 0 : fallback(unit, len, out);
	}
	out->kind = PROTO_UNTAGGED;
	memset(&ctx, 0, sizeof(ctx));
	if (mailimap_response_data_parse(NULL, &s, &ctx, &indx, &rd, 0,
	    NULL) != 0)
		return fallback(unit, len, out);
	from_response_data(rd, out);
	mailimap_response_data_free(rd);
	return 0;
}

int
proto_quote(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	if (cap < 3)
		return -ENOSPC;
	dst[o++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\r' || c == '\n' || c >= 0x80)
			return -EINVAL;
		if (o + 4 > cap)
			return -ENOSPC;
		if (c == '"' || c == '\\')
			dst[o++] = '\\';
		dst[o++] = (char)c;
	}
	dst[o++] = '"';
	dst[o] = '\0';
	return 0;
}

int
proto_uid_set(char *dst, size_t cap, const uint32_t *uids, size_t n)
{
	size_t o = 0, i = 0;

	if (cap == 0)
		return -ENOSPC;
	dst[0] = '\0';
	while (i < n) {
		size_t j = i;
		int w;

		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (j > i)
			w = snprintf(dst + o, cap - o, "%s%u:%u", o ? "," : "",
			    uids[i], uids[j]);
		else
			w = snprintf(dst + o, cap - o, "%s%u", o ? "," : "", uids[i]);
		if (w < 0 || (size_t)w >= cap - o)
			return -ENOSPC;
		o += (size_t)w;
		i = j + 1;
	}
	return (int)o;
}
