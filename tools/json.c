/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "abdctl.h"

void json_string_n(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\t': fputs("\\t", out); break;
		case '\r': fputs("\\r", out); break;
		default:
			/* Control bytes and anything outside ASCII: escaped byte by byte, so that
			 * invalid UTF-8 in a hostile name still yields valid JSON. */
			if (c < 0x20 || c >= 0x7f)
				fprintf(out, "\\u%04x", c);
			else
				fputc(c, out);
		}
	}
	fputc('"', out);
}

void json_string(FILE *out, const char *s)
{
	if (!s)
		fputs("null", out);
	else
		json_string_n(out, s, strlen(s));
}

const char *errno_name(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
#define E(x) case x: return #x;
		E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES)
		E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL)
		E(ENFILE) E(EMFILE) E(ENOSPC) E(EPIPE) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS)
		E(ENOTEMPTY) E(ELOOP) E(ENODATA) E(ETIME) E(EPROTO) E(EBADMSG) E(EOVERFLOW)
		E(EMSGSIZE) E(ENOPROTOOPT) E(EOPNOTSUPP) E(ECONNREFUSED) E(ECONNRESET)
		E(ETIMEDOUT) E(ESTALE) E(ECANCELED) E(EOWNERDEAD) E(ENOTSOCK) E(ENXIO) E(ECHILD)
		E(ENOTCONN) E(EMEDIUMTYPE) E(EUCLEAN) E(ENOTTY)
#undef E
	}
	return "E?";
}

bool is_help_flag(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}
