/* SPDX-License-Identifier: MIT */
#include <abd/version.h>

ABD_EXPORT int abd_version(void)
{
	return ABD_VERSION_NUMBER;
}

ABD_EXPORT const char *abd_version_string(void)
{
	return ABD_VERSION_STRING;
}
