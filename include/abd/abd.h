/* SPDX-License-Identifier: MIT */
/* abd — atomic, brokerless discovery. The umbrella header. */
#ifndef ABD_ABD_H
#define ABD_ABD_H

#include <abd/common.h>
#include <abd/version.h>
#include <abd/probe.h>
#include <abd/registry.h>
#include <abd/ring.h>
#include <abd/reactor.h>
#include <abd/acquire.h>
#include <abd/service.h>

#endif
