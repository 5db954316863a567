/* SPDX-License-Identifier: MIT */
/* What abdctl's commands share: JSON strings, errno names, checked numbers from options. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "abdctl.h"
#include "config.h"

/* The length of the valid UTF-8 sequence at s[0..n) (RFC 3629: shortest form, no surrogates,
 * nothing above U+10FFFF), its code point in *cp; 0 when s does not start one. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len;
	uint32_t v, min;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2, v = s[0] & 0x1fu, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3, v = s[0] & 0x0fu, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4, v = s[0] & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3fu);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

void json_string_n(FILE *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	fputc('"', out);
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_seq(p + i, len - i, &cp);
		if (!n) {
			/* Not UTF-8 (a hostile name, binary metadata): the byte as \u00XX, so that
			 * the output stays valid JSON whatever the input. */
			fprintf(out, "\\u%04x", p[i]);
			i++;
			continue;
		}
		switch (cp) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\t': fputs("\\t", out); break;
		case '\r': fputs("\\r", out); break;
		default:
			/* What JSON requires (control characters), plus DEL and the C1 controls
			 * (U+0080..U+009F), which a terminal may act on, and U+2028/U+2029, which
			 * JavaScript takes for line ends: escaped as the same code points. Every other
			 * character passes through as the UTF-8 it came as. */
			if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029)
				fprintf(out, "\\u%04x", (unsigned)cp);
			else
				fwrite(p + i, 1, n, out);
		}
		i += n;
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

const char *errno_name_table(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
#define E(x) case x: return #x;
		E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC) E(EBADF)
		E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(ENOTBLK) E(EBUSY) E(EEXIST) E(EXDEV)
		E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ETXTBSY)
		E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK) E(EPIPE) E(EDOM) E(ERANGE) E(EDEADLK)
		E(ENAMETOOLONG) E(ENOLCK) E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(ENOMSG) E(EIDRM) E(ECHRNG)
		E(EL2NSYNC) E(EL3HLT) E(EL3RST) E(ELNRNG) E(EUNATCH) E(ENOCSI) E(EL2HLT) E(EBADE)
		E(EBADR) E(EXFULL) E(ENOANO) E(EBADRQC) E(EBADSLT) E(EBFONT) E(ENOSTR) E(ENODATA)
		E(ETIME) E(ENOSR) E(ENONET) E(ENOPKG) E(EREMOTE) E(ENOLINK) E(EADV) E(ESRMNT) E(ECOMM)
		E(EPROTO) E(EMULTIHOP) E(EDOTDOT) E(EBADMSG) E(EOVERFLOW) E(ENOTUNIQ) E(EBADFD)
		E(EREMCHG) E(ELIBACC) E(ELIBBAD) E(ELIBSCN) E(ELIBMAX) E(ELIBEXEC) E(EILSEQ) E(ERESTART)
		E(ESTRPIPE) E(EUSERS) E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE) E(EPROTOTYPE)
		E(ENOPROTOOPT) E(EPROTONOSUPPORT) E(ESOCKTNOSUPPORT) E(EOPNOTSUPP) E(EPFNOSUPPORT)
		E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ENETRESET)
		E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ESHUTDOWN)
		E(ETOOMANYREFS) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY)
		E(EINPROGRESS) E(ESTALE) E(EUCLEAN) E(ENOTNAM) E(ENAVAIL) E(EISNAM) E(EREMOTEIO)
		E(EDQUOT) E(ENOMEDIUM) E(EMEDIUMTYPE) E(ECANCELED) E(ENOKEY) E(EKEYEXPIRED)
		E(EKEYREVOKED) E(EKEYREJECTED) E(EOWNERDEAD) E(ENOTRECOVERABLE) E(ERFKILL) E(EHWPOISON)
#undef E
	}
	return NULL;
}

const char *errno_name(int err)
{
	if (err < 0)
		err = -err;
	const char *name = NULL;
#if ABD_HAVE_STRERRORNAME_NP
	name = strerrorname_np(err);
#endif
	if (!name)
		name = errno_name_table(err);
	return name ? name : "E?";
}

bool is_help_flag(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

bool parse_ll(const char *s, long long min, long long max, long long *out)
{
	/* digits only (a sign where min allows it): no blanks, no base prefix, nothing after */
	const char *d = s[0] == '-' && min < 0 ? s + 1 : s;
	if (*d < '0' || *d > '9')
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool parse_ms(const char *s, int64_t *ns)
{
	long long ms;
	if (s[0] == '-' && strcmp(s, "-1") == 0) {
		*ns = -1;
		return true;
	}
	if (!parse_ll(s, 0, INT64_MAX / 1000000, &ms))
		return false;
	*ns = (int64_t)ms * 1000000;
	return true;
}

void abdctl_getopt_reset(void)
{
	optind = 0; /* glibc: start afresh (a command may be parsed after another) */
	opterr = 0;
}

int abdctl_bad_option(const char *cmd, int c, char **argv)
{
	const char *arg = argv[optind - 1];
	if (c == ':')
		fprintf(stderr, "abdctl %s: %s wants a value (see --help)\n", cmd, arg);
	else
		fprintf(stderr, "abdctl %s: unexpected argument '%s' (see --help)\n", cmd, arg);
	return ABDCTL_USAGE;
}
