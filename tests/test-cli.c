/* SPDX-License-Identifier: MIT */
/* abdctl's shared helpers (tools/json.c): JSON strings, errno names, checked numbers. The
 * commands that use them run as the built binary in test-registry-cli.c / test-service-cli.c. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lib-errnos.h"
#include "tools/abdctl.h"

static char *json(const char *s, size_t len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	cr_assert_not_null(f);
	json_string_n(f, s, len);
	fclose(f);
	return buf;
}

static void expect_json(const char *in, size_t len, const char *want)
{
	char *got = json(in, len);
	cr_assert_str_eq(got, want, "input of %zu bytes", len);
	free(got);
}
#define EXPECT_JSON(in, want) expect_json(in, sizeof(in) - 1, want)

ABD_TEST(cli, json_passes_valid_utf8_through)
{
	EXPECT_JSON("caméra ✓ 😀", "\"caméra ✓ 😀\"");
	EXPECT_JSON("\xdf\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf", "\"\xdf\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
	EXPECT_JSON("plain ascii {}[]/", "\"plain ascii {}[]/\"");
}

ABD_TEST(cli, json_escapes_what_it_must_and_bytes_that_are_not_utf8)
{
	EXPECT_JSON("\"\\\n\t\r", "\"\\\"\\\\\\n\\t\\r\"");
	EXPECT_JSON("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
	EXPECT_JSON("a\0b", "\"a\\u0000b\"");
	/* C1 controls and the JavaScript line ends: escaped as the same code points */
	EXPECT_JSON("\xc2\x80\xc2\x9f\xc2\xa0", "\"\\u0080\\u009f\xc2\xa0\"");
	EXPECT_JSON("\xe2\x80\xa8\xe2\x80\xa9", "\"\\u2028\\u2029\"");
	/* not UTF-8: a stray continuation byte, 0xff, an overlong '/', a surrogate, a code point
	 * past U+10FFFF, a sequence cut short (at the end and before ASCII): one \u00XX a byte */
	EXPECT_JSON("\x80\xff", "\"\\u0080\\u00ff\"");
	EXPECT_JSON("\xc0\xaf", "\"\\u00c0\\u00af\"");
	EXPECT_JSON("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\"");
	EXPECT_JSON("\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\"");
	EXPECT_JSON("\xe2\x9c", "\"\\u00e2\\u009c\"");
	EXPECT_JSON("\xe2" "a", "\"\\u00e2a\"");
	/* a valid character right after an invalid byte is kept whole */
	EXPECT_JSON("\xff\xc3\xa9", "\"\\u00ff\xc3\xa9\"");
}

/* Every -EXXX in the library's sources and public headers (tests/lib-errnos.py) has its name,
 * through strerrorname_np where glibc has it and through the table that stands in for it on
 * older glibc (2.31: Ubuntu 20.04). */
ABD_TEST(cli, every_errno_the_library_returns_has_its_name)
{
	static const struct {
		int err;
		const char *name;
	} all[] = {
#define X(e) { e, #e },
		ABD_LIB_ERRNOS
#undef X
	};
	size_t n = sizeof(all) / sizeof(all[0]);
	cr_assert_geq(n, 40, "the sources' errnos were not found: %zu", n);
	for (size_t i = 0; i < n; i++) {
		cr_assert_str_eq(errno_name(-all[i].err), all[i].name);
		cr_assert_str_eq(errno_name(all[i].err), all[i].name);
		const char *t = errno_name_table(-all[i].err);
		cr_assert_not_null(t, "%s is missing from errno_name_table", all[i].name);
		cr_assert_str_eq(t, all[i].name);
	}
	/* the list, by name */
	cr_assert_str_eq(errno_name(-EPROTONOSUPPORT), "EPROTONOSUPPORT");
	cr_assert_str_eq(errno_name_table(EUSERS), "EUSERS");
	cr_assert_str_eq(errno_name(-4095), "E?");
	cr_assert_null(errno_name_table(4095));
}

ABD_TEST(cli, numbers_are_whole_and_in_range)
{
	long long v = 42;
	cr_assert(parse_ll("0", 0, 10, &v) && v == 0);
	cr_assert(parse_ll("10", 0, 10, &v) && v == 10);
	cr_assert(parse_ll("-3", -5, 5, &v) && v == -3);
	const char *bad[] = { "", " 1", "1 ", "+1", "0x10", "1e3", "11", "-1", "--1", "1.0",
	                      "99999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		cr_assert(!parse_ll(bad[i], 0, 10, &v), "'%s' accepted", bad[i]);
		cr_assert_eq(v, 7, "'%s' changed the value", bad[i]);
	}
	int64_t ns = 0;
	cr_assert(parse_ms("1500", &ns) && ns == 1500000000ll);
	cr_assert(parse_ms("-1", &ns) && ns == -1);
	cr_assert(parse_ms("9223372036854", &ns) && ns == 9223372036854000000ll);
	cr_assert(!parse_ms("9223372036855", &ns), "ms * 1e6 past INT64_MAX accepted");
	cr_assert(!parse_ms("-2", &ns));
}
