/* SPDX-License-Identifier: Apache-2.0 */
/* OCI platforms: "os/arch[/variant]", normalized as containerd does, and matching with variant fallback. */
#pragma once

#include <stdbool.h>

#include "lib/err.h"

struct image_platform {
        char os[32];
        char arch[32];
        char variant[32]; /* "" when none */
};

/* Parse "linux/arm64/v8", "linux/amd64", "arm64" (os defaults to linux); result normalized. */
int platform_parse(const char *s, struct image_platform *ret, struct berr **err);
/* x86_64->amd64, aarch64->arm64 (v8 -> ""), armhf->arm/v7, armel->arm/v6, arm ""->v7, i386->386, lower-case.
 */
void platform_normalize(struct image_platform *p);
/* The platform this binary runs on (normalized). */
void platform_host(struct image_platform *ret);
/* "linux/arm/v7" into buf. */
const char *platform_format(const struct image_platform *p, char *buf, size_t n);
/*
 * Rank how well `have` (an index entry, normalized by the caller or not) serves `want`:
 * 0 = exact, 1.. = fallback (amd64/v3 accepts v2, v1, 386; arm/v7 accepts v6, v5; arm64 accepts arm/v8..v5),
 * -1 = no match. unknown/unknown (attestations) never match.
 */
int platform_match_rank(const struct image_platform *want, const struct image_platform *have);
