/* SPDX-License-Identifier: Apache-2.0 */
/* Health checks of an instance (the cell agent's port and http checks, as Diego runs them). */
#pragma once

#include <stdint.h>

#include "lib/err.h"

/* TCP connect to ip:port within timeout_ms. 0 on success, negative errno otherwise (err says why). */
int health_check_port(const char *ip, uint16_t port, unsigned timeout_ms, struct berr **err);
/* GET endpoint on ip:port; success only for status 200 within timeout_ms (all of it: connect and answer). */
int health_check_http(const char *ip, uint16_t port, const char *endpoint, unsigned timeout_ms,
                      struct berr **err);
