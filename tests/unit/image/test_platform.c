/* SPDX-License-Identifier: Apache-2.0 */
/* Platform parsing, containerd-style normalization, host detection and match ranking with fallbacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/utsname.h>

#include <cmocka.h>

#include "image/platform.h"

void platform_from_machine(const char *machine, struct image_platform *p);

static struct image_platform P(const char *os, const char *arch, const char *variant) {
        struct image_platform p = { 0 };
        snprintf(p.os, sizeof(p.os), "%s", os);
        snprintf(p.arch, sizeof(p.arch), "%s", arch);
        snprintf(p.variant, sizeof(p.variant), "%s", variant);
        return p;
}

static void
expect_parse(const char *in, const char *os, const char *arch, const char *variant)
{
        struct image_platform p;
        struct berr *e = NULL;
        if (platform_parse(in, &p, &e) < 0)
                fail_msg("\"%s\" rejected: %s", in, berr_msg(e));
        if (strcmp(p.os, os) || strcmp(p.arch, arch) || strcmp(p.variant, variant))
                fail_msg("\"%s\" -> %s/%s/%s, want %s/%s/%s", in, p.os, p.arch, p.variant, os, arch, variant);
}

static void test_parse_and_normalize(void **state)
{
        (void)state;
        expect_parse("linux/amd64", "linux", "amd64", "");
        expect_parse("linux/x86_64", "linux", "amd64", "");
        expect_parse("linux/x86-64", "linux", "amd64", "");
        expect_parse("linux/amd64/v1", "linux", "amd64", "");
        expect_parse("linux/amd64/v3", "linux", "amd64", "v3");
        expect_parse("linux/aarch64", "linux", "arm64", "");
        expect_parse("linux/arm64/v8", "linux", "arm64", "");
        expect_parse("linux/arm64/8", "linux", "arm64", "");
        expect_parse("linux/arm64/v8.0", "linux", "arm64", "");
        expect_parse("linux/arm64/v8.2", "linux", "arm64", "v8.2");
        expect_parse("linux/arm64/9", "linux", "arm64", "v9");
        expect_parse("linux/armhf", "linux", "arm", "v7");
        expect_parse("linux/armel", "linux", "arm", "v6");
        expect_parse("linux/arm", "linux", "arm", "v7");
        expect_parse("linux/arm/7", "linux", "arm", "v7");
        expect_parse("linux/arm/6", "linux", "arm", "v6");
        expect_parse("linux/arm/v5", "linux", "arm", "v5");
        expect_parse("linux/arm/8", "linux", "arm", "v8");
        expect_parse("linux/i386", "linux", "386", "");
        expect_parse("linux/386", "linux", "386", "");
        expect_parse("darwin/arm64", "darwin", "arm64", "");
        expect_parse("macos/arm64", "darwin", "arm64", "");
        expect_parse("LINUX/AMD64", "linux", "amd64", "");
        expect_parse("Linux/ARM/V7", "linux", "arm", "v7");
        expect_parse("Linux/AArch64", "linux", "arm64", "");
        expect_parse("linux/s390x", "linux", "s390x", "");
        expect_parse("linux/ppc64le", "linux", "ppc64le", "");
        expect_parse("linux/riscv64", "linux", "riscv64", "");
        /* A bare architecture means Linux. */
        expect_parse("arm64", "linux", "arm64", "");
        expect_parse("x86_64", "linux", "amd64", "");
        expect_parse("armhf", "linux", "arm", "v7");

        /* A bare OS means the host's architecture. */
        struct image_platform host, p;
        platform_host(&host);
        assert_int_equal(platform_parse("linux", &p, NULL), 0);
        assert_string_equal(p.os, "linux");
        assert_string_equal(p.arch, host.arch);
        assert_string_equal(p.variant, host.variant);
}

static void test_parse_errors(void **state)
{
        (void)state;
        static const struct {
                const char *in, *msg;
        } bad[] = {
                { "", "empty platform" },
                { "linux/", "component 2" },
                { "/amd64", "component 1" },
                { "linux//v7", "component 2" },
                { "linux/arm/v7/x", "too many components" },
                { "linux/am d64", "component 2" },
                { "linux/amd64/v\xc3\xa9", "component 3" },
                { "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 31" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct image_platform p = P("keep", "keep", "");
                struct berr *e = NULL;
                int r = platform_parse(bad[i].in, &p, &e);
                if (r >= 0)
                        fail_msg("\"%s\" accepted", bad[i].in);
                assert_int_equal(r, -EINVAL);
                if (!strstr(berr_msg(e), bad[i].msg))
                        fail_msg("\"%s\": \"%s\" lacks \"%s\"", bad[i].in, berr_msg(e), bad[i].msg);
                assert_string_equal(p.os, "keep"); /* not written on failure */
                berr_free(e);
        }
        struct image_platform p;
        assert_int_equal(platform_parse(NULL, &p, NULL), -EINVAL);
}

static void test_normalize_direct(void **state)
{
        (void)state;
        struct image_platform p = P("Linux", "ARMEL", "v7");
        platform_normalize(&p);
        assert_string_equal(p.os, "linux");
        assert_string_equal(p.arch, "arm");
        assert_string_equal(p.variant, "v6"); /* armel always means v6 */
        p = P("linux", "i386", "sse2");
        platform_normalize(&p);
        assert_string_equal(p.arch, "386");
        assert_string_equal(p.variant, "");
        p = P("linux", "mips64le", "");
        platform_normalize(&p);
        assert_string_equal(p.arch, "mips64le");
}

static void test_format(void **state)
{
        (void)state;
        char buf[64];
        struct image_platform p = P("linux", "arm", "v7");
        assert_string_equal(platform_format(&p, buf, sizeof(buf)), "linux/arm/v7");
        p = P("linux", "amd64", "");
        assert_string_equal(platform_format(&p, buf, sizeof(buf)), "linux/amd64");
        char small[6];
        assert_string_equal(platform_format(&p, small, sizeof(small)), "linux");
}

static void test_host(void **state)
{
        (void)state;
        struct image_platform h;
        platform_host(&h);
        assert_string_equal(h.os, "linux");
        assert_true(h.arch[0] != '\0');
        struct utsname u;
        assert_int_equal(uname(&u), 0);
        if (strcmp(u.machine, "x86_64") == 0) {
                assert_string_equal(h.arch, "amd64");
                assert_string_equal(h.variant, "");
        } else if (strcmp(u.machine, "aarch64") == 0) {
                assert_string_equal(h.arch, "arm64");
                assert_string_equal(h.variant, "");
        }
        /* The host matches itself exactly. */
        assert_int_equal(platform_match_rank(&h, &h), 0);

        static const struct {
                const char *machine, *arch, *variant;
        } m[] = {
                { "x86_64", "amd64", "" },   { "i686", "386", "" },        { "i386", "386", "" },
                { "aarch64", "arm64", "" },  { "armv7l", "arm", "v7" },    { "armv6l", "arm", "v6" },
                { "armv5tel", "arm", "v5" }, { "armv8l", "arm", "v8" },    { "ppc64le", "ppc64le", "" },
                { "s390x", "s390x", "" },    { "riscv64", "riscv64", "" }, { "loongarch64", "loong64", "" },
        };
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
                struct image_platform p = P("linux", "", "");
                platform_from_machine(m[i].machine, &p);
                if (strcmp(p.arch, m[i].arch) || strcmp(p.variant, m[i].variant))
                        fail_msg("%s -> %s/%s, want %s/%s", m[i].machine, p.arch, p.variant, m[i].arch,
                                 m[i].variant);
        }
}

static int rank(const char *want, const char *have)
{
        struct image_platform w, h;
        assert_int_equal(platform_parse(want, &w, NULL), 0);
        /* `have` is used as written (unnormalized), like an index entry. */
        char os[32] = "", arch[32] = "", variant[32] = "";
        sscanf(have, "%31[^/]/%31[^/]/%31s", os, arch, variant);
        h = P(os, arch, variant);
        return platform_match_rank(&w, &h);
}

static void test_match_rank(void **state)
{
        (void)state;
        /* Exact, including non-canonical spellings on either side. */
        assert_int_equal(rank("linux/amd64", "linux/amd64"), 0);
        assert_int_equal(rank("linux/amd64", "linux/x86_64"), 0);
        assert_int_equal(rank("linux/amd64", "Linux/AMD64"), 0);
        assert_int_equal(rank("linux/amd64", "linux/amd64/v1"), 0);
        assert_int_equal(rank("linux/arm64", "linux/arm64/v8"), 0);
        assert_int_equal(rank("linux/arm64/v8", "linux/aarch64"), 0);
        assert_int_equal(rank("linux/arm/v7", "linux/arm"), 0);
        assert_int_equal(rank("linux/arm/v7", "linux/armhf"), 0);
        assert_int_equal(rank("linux/arm/v6", "linux/armel"), 0);
        assert_int_equal(rank("linux/386", "linux/i386"), 0);

        /* amd64/vN -> v(N-1)..v1, then 386. */
        assert_int_equal(rank("linux/amd64/v3", "linux/amd64/v3"), 0);
        assert_int_equal(rank("linux/amd64/v3", "linux/amd64/v2"), 1);
        assert_int_equal(rank("linux/amd64/v3", "linux/amd64"), 2);
        assert_int_equal(rank("linux/amd64/v3", "linux/386"), 3);
        assert_int_equal(rank("linux/amd64", "linux/386"), 1);
        assert_int_equal(rank("linux/amd64", "linux/amd64/v2"), -1); /* needs newer CPU */
        assert_int_equal(rank("linux/amd64/v2", "linux/amd64/v4"), -1);

        /* arm/vN -> v(N-1)..v5. */
        assert_int_equal(rank("linux/arm/v8", "linux/arm/v7"), 1);
        assert_int_equal(rank("linux/arm/v8", "linux/arm/v6"), 2);
        assert_int_equal(rank("linux/arm/v8", "linux/arm/v5"), 3);
        assert_int_equal(rank("linux/arm/v7", "linux/arm/v6"), 1);
        assert_int_equal(rank("linux/arm/v7", "linux/arm/v5"), 2);
        assert_int_equal(rank("linux/arm/v7", "linux/arm/v8"), -1);
        assert_int_equal(rank("linux/arm/v6", "linux/arm/v7"), -1);
        assert_int_equal(rank("linux/arm/v5", "linux/arm/v5"), 0);
        assert_int_equal(rank("linux/arm/v7", "linux/arm64"), -1);

        /* arm64 -> arm/v8..v5, with arm64 itself best. */
        assert_int_equal(rank("linux/arm64", "linux/arm/v8"), 1);
        assert_int_equal(rank("linux/arm64", "linux/arm/v7"), 2);
        assert_int_equal(rank("linux/arm64", "linux/arm/v6"), 3);
        assert_int_equal(rank("linux/arm64", "linux/arm/v5"), 4);
        assert_int_equal(rank("linux/arm64", "linux/armhf"), 2);
        assert_int_equal(rank("linux/arm64", "linux/arm64/v8.2"), -1);
        /* arm64/v8.x -> v8.(x-1)..v8, then arm. */
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm64/v8.2"), 0);
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm64/v8.1"), 1);
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm64"), 2);
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm64/v8"), 2);
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm/v8"), 3);
        assert_int_equal(rank("linux/arm64/v8.2", "linux/arm64/v8.3"), -1);
        /* arm64/v9.x -> v9.(x-1)..v9, then v8.(x+5)..v8. */
        assert_int_equal(rank("linux/arm64/v9.1", "linux/arm64/v9"), 1);
        assert_int_equal(rank("linux/arm64/v9.1", "linux/arm64/v8.6"), 2);
        assert_int_equal(rank("linux/arm64/v9.1", "linux/arm64/v8.5"), 3);
        assert_int_equal(rank("linux/arm64/v9", "linux/arm64/v8.5"), 1);
        assert_int_equal(rank("linux/arm64/v9", "linux/arm64"), 6);
        assert_int_equal(rank("linux/arm64/v9", "linux/arm64/v8.6"), -1);

        /* OS must agree; other architectures have no fallback. */
        assert_int_equal(rank("linux/amd64", "windows/amd64"), -1);
        assert_int_equal(rank("linux/amd64", "linux/arm64"), -1);
        assert_int_equal(rank("linux/s390x", "linux/s390x"), 0);
        assert_int_equal(rank("linux/s390x", "linux/ppc64le"), -1);
        assert_int_equal(rank("linux/ppc64le", "linux/ppc64le/power9"), -1);

        /* unknown/unknown (attestations) never matches, not even itself. */
        assert_int_equal(rank("linux/amd64", "unknown/unknown"), -1);
        assert_int_equal(rank("unknown/unknown", "unknown/unknown"), -1);
        assert_int_equal(rank("linux/unknown", "linux/unknown"), -1);
        assert_int_equal(rank("unknown/amd64", "unknown/amd64"), -1);
        struct image_platform w = P("linux", "amd64", ""), empty = P("", "", "");
        assert_int_equal(platform_match_rank(&w, &empty), -1);
        struct image_platform noos = P("", "amd64", "");
        assert_int_equal(platform_match_rank(&w, &noos), -1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_and_normalize),
                cmocka_unit_test(test_parse_errors),
                cmocka_unit_test(test_normalize_direct),
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_host),
                cmocka_unit_test(test_match_rank),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
