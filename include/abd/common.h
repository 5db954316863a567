/* SPDX-License-Identifier: MIT */
/* abd: conventions shared by every public header.
 *
 * Every call returns 0 (or a positive count) on success and a negative errno on failure;
 * errno itself carries no meaning. Descriptors passed *into* a call are borrowed unless the
 * call's comment says it takes them; descriptors handed *out* belong to the caller and are
 * always O_CLOEXEC.
 *
 * The headers compile as C11 and later, and as C++ (extern "C"). */
#ifndef ABD_COMMON_H
#define ABD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define ABD_BEGIN_DECLS extern "C" {
#define ABD_END_DECLS }
#else
#define ABD_BEGIN_DECLS
#define ABD_END_DECLS
#endif

#if defined(ABD_BUILDING_LIBRARY)
#define ABD_EXPORT __attribute__((visibility("default")))
#else
#define ABD_EXPORT
#endif

#if defined(__cplusplus) && __cplusplus >= 201703L
#define ABD_NODISCARD [[nodiscard]]
#elif defined(__GNUC__)
#define ABD_NODISCARD __attribute__((warn_unused_result))
#else
#define ABD_NODISCARD
#endif

/* Functions on the ring's fast path promise not to block, allocate or take locks; clang's
 * realtime sanitizer (-fsanitize=realtime) checks the promise at run time. Only clang 20+
 * understands the attribute, and only C/C++ code compiled by it needs to see it. */
#if defined(__clang__) && defined(__has_attribute)
#if __has_attribute(nonblocking) && !defined(__cplusplus)
#define ABD_NONBLOCKING __attribute__((nonblocking))
#endif
#endif
#ifndef ABD_NONBLOCKING
#define ABD_NONBLOCKING
#endif

/* A cleanup helper for callers: ABD_CLEANUP(abd_x_freep) struct abd_x *x = NULL; */
#define ABD_CLEANUP(fn) __attribute__((cleanup(fn)))
#define ABD_DEFINE_POINTER_CLEANUP(type, freefn)                                       \
	static inline void freefn##p(type **p)                                             \
	{                                                                                  \
		if (*p)                                                                        \
			freefn(*p);                                                                \
	}

#endif
