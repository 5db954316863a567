/* SPDX-License-Identifier: MIT */
/* The handshake's wire format on arbitrary bytes (compat/handshake.c): both parsers must
 * return a message or an error, never read out of bounds; whatever parses must re-encode to
 * the same bytes (the format has one encoding per message) and parse again to the same
 * message. The first byte chooses which parser sees the rest. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compat/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void request(const uint8_t *data, size_t size)
{
	struct abd__hs_request req, again;
	int r = abd__hs_request_parse(data, size, &req);
	if (r < 0) {
		if (r != -EBADMSG && r != -EPROTONOSUPPORT)
			abort();
		return;
	}
	uint8_t buf[ABD__HS_MSG_MAX];
	long n = abd__hs_request_encode(&req, buf, sizeof(buf));
	if (n < 0 || (size_t)n != size || memcmp(buf, data, size) != 0)
		abort();
	if (abd__hs_request_parse(buf, (size_t)n, &again) != 0 || memcmp(&req, &again, sizeof(req)))
		abort();
}

static void reply(const uint8_t *data, size_t size)
{
	struct abd__hs_reply rep, again;
	int r = abd__hs_reply_parse(data, size, &rep);
	if (r < 0) {
		if (r != -EBADMSG && r != -EPROTONOSUPPORT)
			abort();
		return;
	}
	if (rep.nfds > ABD__HS_FDS_MAX || (rep.status && (rep.nfds || rep.kept)))
		abort();
	uint8_t buf[ABD__HS_MSG_MAX];
	long n = abd__hs_reply_encode(&rep, buf, sizeof(buf));
	if (n < 0 || (size_t)n != size || memcmp(buf, data, size) != 0)
		abort();
	if (abd__hs_reply_parse(buf, (size_t)n, &again) != 0 || memcmp(&rep, &again, sizeof(rep)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* a private copy: the parsers must not depend on anything past size */
	uint8_t *copy = malloc(size - 1 ? size - 1 : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	if (data[0] & 1)
		reply(copy, size - 1);
	else
		request(copy, size - 1);
	free(copy);
	return 0;
}
