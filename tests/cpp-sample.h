/* SPDX-License-Identifier: MIT */
/* The message type both sides of the C/C++ interoperation tests share: tests/cpp-peer.c (C,
 * ABD_SERVICE_TYPED) and tests/test-cpp.cpp (C++, abd::service<cpp_sample>). */
#ifndef ABD_TESTS_CPP_SAMPLE_H
#define ABD_TESTS_CPP_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

struct cpp_sample {
	uint64_t seq;
	uint32_t check; /* seq * 2654435761, truncated */
	uint32_t sensor;
	double value;
};

#define CPP_SAMPLE_NAME "abd.test.sample"
#define CPP_SAMPLE_LAYOUT "u64 seq; u32 check; u32 sensor; f64 value"
#define CPP_SAMPLE_LAYOUT_V2 "u64 seq; u32 check; u32 sensor; f64 value; v2"

static inline struct cpp_sample cpp_sample_make(uint64_t seq)
{
	struct cpp_sample s;
	s.seq = seq;
	s.check = (uint32_t)(seq * 2654435761u);
	s.sensor = 7;
	s.value = (double)seq / 4;
	return s;
}

static inline bool cpp_sample_ok(const struct cpp_sample *s, uint64_t seq)
{
	return s->seq == seq && s->check == (uint32_t)(seq * 2654435761u) && s->sensor == 7 &&
	       s->value == (double)seq / 4;
}

#endif
