/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OCI platforms. Normalization and the fallback order follow containerd's platforms package
 * (oci-registry-runtime.md §1.4), so that berth picks the same index entry as containerd and Docker.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#include "image/platform.h"

#define PLATFORM_FIELD_MAX (sizeof(((struct image_platform *)0)->os) - 1)
/* Longest fallback vector: arm64/v9.x walks v9.x..v9, v8.(x+5)..v8, then arm/v9..v5. */
#define PLATFORM_VECTOR_MAX  64
#define PLATFORM_MINOR_MAX   20
#define PLATFORM_CPUINFO_MAX (256 * 1024)

static void str_lower(char *s)
{
        for (; *s; s++)
                if (*s >= 'A' && *s <= 'Z')
                        *s = (char)(*s - 'A' + 'a');
}

/* Copy into a 32-byte platform field, truncating (callers check lengths where input is untrusted). */
static void field_set(char dst[static 32], const char *src)
{
        size_t n = strnlen(src, 31);
        memmove(dst, src, n);
        dst[n] = '\0';
}

void platform_normalize(struct image_platform *p)
{
        str_lower(p->os);
        str_lower(p->arch);
        str_lower(p->variant);
        if (strcmp(p->os, "macos") == 0)
                field_set(p->os, "darwin");

        const char *a = p->arch, *v = p->variant;
        if (strcmp(a, "i386") == 0) {
                field_set(p->arch, "386");
                p->variant[0] = '\0';
        } else if (strcmp(a, "x86_64") == 0 || strcmp(a, "x86-64") == 0 || strcmp(a, "amd64") == 0) {
                field_set(p->arch, "amd64");
                if (strcmp(v, "v1") == 0)
                        p->variant[0] = '\0';
        } else if (strcmp(a, "aarch64") == 0 || strcmp(a, "arm64") == 0) {
                field_set(p->arch, "arm64");
                if (strcmp(v, "8") == 0 || strcmp(v, "v8") == 0 || strcmp(v, "v8.0") == 0)
                        p->variant[0] = '\0';
                else if (strcmp(v, "9") == 0 || strcmp(v, "9.0") == 0 || strcmp(v, "v9.0") == 0)
                        field_set(p->variant, "v9");
        } else if (strcmp(a, "armhf") == 0) {
                field_set(p->arch, "arm");
                field_set(p->variant, "v7");
        } else if (strcmp(a, "armel") == 0) {
                field_set(p->arch, "arm");
                field_set(p->variant, "v6");
        } else if (strcmp(a, "arm") == 0) {
                if (v[0] == '\0' || strcmp(v, "7") == 0)
                        field_set(p->variant, "v7");
                else if (strcmp(v, "5") == 0 || strcmp(v, "6") == 0 || strcmp(v, "8") == 0) {
                        p->variant[1] = p->variant[0];
                        p->variant[0] = 'v';
                        p->variant[2] = '\0';
                }
        }
}

/* Operating systems a bare single-word platform may name (then the architecture is the host's). */
static bool os_is_known(const char *s)
{
        static const char *const known[] = { "aix",   "android", "darwin", "dragonfly", "freebsd", "illumos",
                                             "ios",   "js",      "linux",  "macos",     "netbsd",  "openbsd",
                                             "plan9", "solaris", "wasip1", "windows" };
        for (size_t i = 0; i < ARRAY_SIZE(known); i++)
                if (strcasecmp(s, known[i]) == 0)
                        return true;
        return false;
}

static bool specifier_valid(const char *s, size_t n)
{
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '-'))
                        return false;
        }
        return true;
}

/*
 * "os/arch[/variant]", or one word: a known OS name (then the host's architecture) or an architecture
 * (then linux). Components are [A-Za-z0-9_.-]{1,31}. *ret is written only on success, normalized.
 */
int platform_parse(const char *s, struct image_platform *ret, struct berr **err)
{
        if (!s || !*s)
                return berr_set(err, -EINVAL, "empty platform (want os/arch[/variant], e.g. linux/arm64)");
        const char *part[3];
        size_t plen[3];
        size_t n = 0;
        const char *p = s;
        for (;;) {
                const char *slash = strchr(p, '/');
                size_t l = slash ? (size_t)(slash - p) : strlen(p);
                if (n == 3)
                        return berr_set(err, -EINVAL,
                                        "invalid platform \"%.64s\": too many components (want "
                                        "os/arch[/variant])",
                                        s);
                if (!specifier_valid(p, l))
                        return berr_set(
                            err, -EINVAL,
                            "invalid platform \"%.64s\": component %zu is empty or has characters "
                            "other than letters, digits, '_', '.', '-'",
                            s, n + 1);
                if (l > PLATFORM_FIELD_MAX)
                        return berr_set(
                            err, -EINVAL,
                            "invalid platform \"%.64s\": component %zu is longer than %zu characters", s,
                            n + 1, PLATFORM_FIELD_MAX);
                part[n] = p;
                plen[n] = l;
                n++;
                if (!slash)
                        break;
                p = slash + 1;
        }

        struct image_platform r = { 0 };
        if (n == 1) {
                char word[32];
                snprintf(word, sizeof(word), "%.*s", (int)plen[0], part[0]);
                if (os_is_known(word)) {
                        struct image_platform host;
                        platform_host(&host);
                        field_set(r.os, word);
                        field_set(r.arch, host.arch);
                        field_set(r.variant, host.variant);
                } else {
                        field_set(r.os, "linux");
                        field_set(r.arch, word);
                }
        } else {
                snprintf(r.os, sizeof(r.os), "%.*s", (int)plen[0], part[0]);
                snprintf(r.arch, sizeof(r.arch), "%.*s", (int)plen[1], part[1]);
                if (n == 3)
                        snprintf(r.variant, sizeof(r.variant), "%.*s", (int)plen[2], part[2]);
        }
        platform_normalize(&r);
        *ret = r;
        return 0;
}

/*
 * The ARM architecture version from /proc/cpuinfo's "CPU architecture" line, or 0. Only used when
 * uname's machine string does not say it ("armv7l" does).
 */
static int arm_version_from_cpuinfo(void)
{
        _cleanup_close_ int fd = open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        _cleanup_free_ char *buf = xmalloc(PLATFORM_CPUINFO_MAX + 1);
        size_t len = 0;
        while (len < PLATFORM_CPUINFO_MAX) {
                ssize_t k = read(fd, buf + len, PLATFORM_CPUINFO_MAX - len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                len += (size_t)k;
        }
        buf[len] = '\0';
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = '\0';
                if (strncasecmp(line, "CPU architecture", 16) == 0) {
                        char *colon = strchr(line, ':');
                        if (colon) {
                                int v = (int)strtol(colon + 1, NULL, 10);
                                if (v > 0 && v < 100)
                                        return v;
                        }
                }
                line = nl ? nl + 1 : NULL;
        }
        return 0;
}

BERTH_STATIC void platform_from_machine(const char *machine, struct image_platform *p);

/* Map uname(2)'s machine to a GOARCH name (and ARM variant). Unknown machines pass through. */
BERTH_STATIC void platform_from_machine(const char *machine, struct image_platform *p)
{
        p->variant[0] = '\0';
        if (strcmp(machine, "x86_64") == 0 || strcmp(machine, "amd64") == 0)
                field_set(p->arch, "amd64");
        else if (strlen(machine) == 4 && machine[0] == 'i' && machine[1] >= '3' && machine[1] <= '6' &&
                 strcmp(machine + 2, "86") == 0)
                field_set(p->arch, "386");
        else if (strcmp(machine, "aarch64") == 0 || strcmp(machine, "arm64") == 0 ||
                 strcmp(machine, "aarch64_be") == 0)
                field_set(p->arch, "arm64");
        else if (strncmp(machine, "arm", 3) == 0) {
                field_set(p->arch, "arm");
                /* "armv7l", "armv6l", "armv5tel", "armv8l" (32-bit userland on a 64-bit CPU). */
                int v = 0;
                if (machine[3] == 'v' && machine[4] >= '1' && machine[4] <= '9')
                        v = machine[4] - '0';
                if (v == 0)
                        v = arm_version_from_cpuinfo();
                if (v >= 5 && v <= 8)
                        snprintf(p->variant, sizeof(p->variant), "v%d", v);
        } else if (strcmp(machine, "loongarch64") == 0)
                field_set(p->arch, "loong64");
        else
                field_set(p->arch, machine);
        platform_normalize(p);
}

void platform_host(struct image_platform *ret)
{
        struct image_platform p = { 0 };
        struct utsname u;
        if (uname(&u) == 0) {
                field_set(p.os, u.sysname);
                platform_from_machine(u.machine, &p);
        } else {
                /* uname(2) does not fail in practice; fall back to what we were compiled for. */
                field_set(p.os, "linux");
#if defined(__x86_64__)
                field_set(p.arch, "amd64");
#elif defined(__aarch64__)
                field_set(p.arch, "arm64");
#elif defined(__arm__)
                field_set(p.arch, "arm");
#elif defined(__i386__)
                field_set(p.arch, "386");
#else
                field_set(p.arch, "unknown");
#endif
        }
        platform_normalize(&p);
        *ret = p;
}

const char *platform_format(const struct image_platform *p, char *buf, size_t n)
{
        if (!buf || n == 0)
                return buf;
        if (p->variant[0])
                snprintf(buf, n, "%s/%s/%s", p->os, p->arch, p->variant);
        else
                snprintf(buf, n, "%s/%s", p->os, p->arch);
        return buf;
}

/* "v<digits>" with 1..2 digits and no leading zero, else -1. Stops at '.' when allow_minor. */
static int variant_number(const char *s, const char **end)
{
        if (s[0] != 'v' || s[1] < '1' || s[1] > '9')
                return -1;
        int v = s[1] - '0';
        size_t i = 2;
        if (s[i] >= '0' && s[i] <= '9')
                v = v * 10 + (s[i++] - '0');
        if (end)
                *end = s + i;
        else if (s[i] != '\0')
                return -1;
        return v;
}

struct platform_vector {
        struct image_platform p[PLATFORM_VECTOR_MAX];
        size_t n;
};

static void vector_add(struct platform_vector *vec, const char *os, const char *arch, const char *variant)
{
        if (vec->n >= PLATFORM_VECTOR_MAX)
                return;
        struct image_platform *p = &vec->p[vec->n++];
        *p = (struct image_platform){ 0 };
        field_set(p->os, os);
        field_set(p->arch, arch);
        field_set(p->variant, variant);
        platform_normalize(p);
}

static void vector_add_arm(struct platform_vector *vec, const char *os, const char *variant)
{
        vector_add(vec, os, "arm", variant);
        int v = variant_number(variant, NULL);
        for (v--; v >= 5; v--) {
                char b[16];
                snprintf(b, sizeof(b), "v%d", v);
                vector_add(vec, os, "arm", b);
        }
}

/* Add arm64/v<major>.<minor-1> .. v<major> (minor 0 written as plain v<major>). */
static void vector_add_arm64_minors(struct platform_vector *vec, const char *os, int major, int minor)
{
        for (int m = minor - 1; m >= 0; m--) {
                char b[16];
                if (m == 0)
                        snprintf(b, sizeof(b), "v%d", major);
                else
                        snprintf(b, sizeof(b), "v%d.%d", major, m);
                vector_add(vec, os, "arm64", b);
        }
}

/*
 * The ordered list of platforms that can serve `w` (normalized), best first: containerd's
 * platformVector().
 */
static void platform_vector_build(const struct image_platform *w, struct platform_vector *vec)
{
        vec->n = 0;
        vector_add(vec, w->os, w->arch, w->variant);
        if (strcmp(w->arch, "amd64") == 0) {
                int v = w->variant[0] ? variant_number(w->variant, NULL) : 1;
                for (v--; v >= 1; v--) {
                        char b[16];
                        snprintf(b, sizeof(b), "v%d", v);
                        vector_add(vec, w->os, "amd64", b);
                }
                vector_add(vec, w->os, "386", "");
        } else if (strcmp(w->arch, "arm") == 0) {
                int v = variant_number(w->variant, NULL);
                for (v--; v >= 5; v--) {
                        char b[16];
                        snprintf(b, sizeof(b), "v%d", v);
                        vector_add(vec, w->os, "arm", b);
                }
        } else if (strcmp(w->arch, "arm64") == 0) {
                const char *variant = w->variant[0] ? w->variant : "v8";
                const char *end = NULL;
                int major = variant_number(variant, &end);
                int minor = 0;
                if (major > 0 && end[0] == '.' && end[1] >= '0' && end[1] <= '9') {
                        char *e2 = NULL;
                        long m = strtol(end + 1, &e2, 10);
                        if (*e2 == '\0' && m >= 0 && m <= PLATFORM_MINOR_MAX)
                                minor = (int)m;
                        else
                                major = -1; /* unparsable: no arm64 fallbacks */
                } else if (major > 0 && end[0] != '\0') {
                        major = -1;
                }
                if (major >= 8) {
                        if (major == 9) {
                                vector_add_arm64_minors(vec, w->os, 9, minor);
                                /* v9.0 branched from v8.5: v9.x can run v8.(x+5) code. */
                                minor += 5;
                                major = 8;
                                char b[16];
                                snprintf(b, sizeof(b), "v8.%d", minor);
                                vector_add(vec, w->os, "arm64", b);
                        }
                        vector_add_arm64_minors(vec, w->os, major, minor);
                }
                const char *arm_variant = variant;
                if (strncmp(variant, "v8.", 3) == 0 || strncmp(variant, "v9.", 3) == 0)
                        arm_variant = "v8";
                vector_add_arm(vec, w->os, arm_variant);
        }
}

static bool platform_is_unknown(const struct image_platform *p)
{
        return !p->os[0] || !p->arch[0] || strcmp(p->os, "unknown") == 0 || strcmp(p->arch, "unknown") == 0;
}

/* Position of `have` in want's fallback vector (both normalized first), or -1. */
int platform_match_rank(const struct image_platform *want, const struct image_platform *have)
{
        struct image_platform w = *want, h = *have;
        /* The fields come from untrusted documents: make sure they are terminated before use. */
        w.os[sizeof(w.os) - 1] = w.arch[sizeof(w.arch) - 1] = w.variant[sizeof(w.variant) - 1] = '\0';
        h.os[sizeof(h.os) - 1] = h.arch[sizeof(h.arch) - 1] = h.variant[sizeof(h.variant) - 1] = '\0';
        platform_normalize(&w);
        platform_normalize(&h);
        if (platform_is_unknown(&w) || platform_is_unknown(&h))
                return -1;
        struct platform_vector vec;
        platform_vector_build(&w, &vec);
        for (size_t i = 0; i < vec.n; i++) {
                const struct image_platform *c = &vec.p[i];
                if (strcmp(c->os, h.os) == 0 && strcmp(c->arch, h.arch) == 0 &&
                    strcmp(c->variant, h.variant) == 0)
                        return (int)i;
        }
        return -1;
}
