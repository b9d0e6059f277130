/* SPDX-License-Identifier: Apache-2.0 */
/* Image reference parsing and Docker normalization: tables of good and bad references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "image/reference.h"

#define H64  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DGST "sha256:" H64

struct good {
        const char *in;
        const char *out;    /* image_ref_string */
        const char *domain; /* NULL: not checked */
        const char *path;
        const char *tag; /* "-" means NULL */
};

static const struct good goods[] = {
        { "nginx", "docker.io/library/nginx:latest", "docker.io", "library/nginx", "latest" },
        { "nginx:1.25", "docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25" },
        { "user/app:1", "docker.io/user/app:1", "docker.io", "user/app", "1" },
        { "docker.io/nginx", "docker.io/library/nginx:latest", "docker.io", "library/nginx", "latest" },
        { "docker.io/library/nginx", "docker.io/library/nginx:latest", NULL, NULL, NULL },
        { "index.docker.io/nginx", "docker.io/library/nginx:latest", "docker.io", "library/nginx", NULL },
        { "index.docker.io/user/app", "docker.io/user/app:latest", "docker.io", "user/app", NULL },
        { "registry-1.docker.io/nginx:1", "docker.io/library/nginx:1", "docker.io", NULL, NULL },
        { "localhost/app", "localhost/app:latest", "localhost", "app", "latest" },
        { "localhost:5000/app", "localhost:5000/app:latest", "localhost:5000", "app", "latest" },
        { "localhost:5000/a/b/c:v2", "localhost:5000/a/b/c:v2", "localhost:5000", "a/b/c", "v2" },
        { "quay.io/a/b@" DGST, "quay.io/a/b@" DGST, "quay.io", "a/b", "-" },
        { "a/b:tag@" DGST, "docker.io/a/b:tag@" DGST, "docker.io", "a/b", "tag" },
        { "nginx@" DGST, "docker.io/library/nginx@" DGST, "docker.io", "library/nginx", "-" },
        { "[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000", "app", "latest" },
        { "[::1]/app:x", "[::1]/app:x", "[::1]", "app", "x" },
        { "[2001:db8::1]:443/ns/app", "[2001:db8::1]:443/ns/app:latest", "[2001:db8::1]:443", "ns/app",
          NULL },
        { "127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000", "app", NULL },
        { "Foo/bar", "Foo/bar:latest", "Foo", "bar", NULL }, /* uppercase first component is a domain */
        { "MyRegistry/app", "MyRegistry/app:latest", "MyRegistry", "app", NULL },
        { "registry.example.com/team/app:1.0.0-rc.1", "registry.example.com/team/app:1.0.0-rc.1", NULL, NULL,
          "1.0.0-rc.1" },
        { "my-registry.example.com:8443/x", "my-registry.example.com:8443/x:latest",
          "my-registry.example.com:8443", "x", NULL },
        { "a.b/c", "a.b/c:latest", "a.b", "c", NULL },
        { "a:1/b", "a:1/b:latest", "a:1", "b", NULL },
        { "localhost:5000", "docker.io/library/localhost:5000", "docker.io", "library/localhost", "5000" },
        { "example.com:5000", "docker.io/library/example.com:5000", "docker.io", "library/example.com",
          "5000" },
        { "foo_bar", "docker.io/library/foo_bar:latest", NULL, "library/foo_bar", NULL },
        { "foo__bar", "docker.io/library/foo__bar:latest", NULL, "library/foo__bar", NULL },
        { "foo---bar", "docker.io/library/foo---bar:latest", NULL, "library/foo---bar", NULL },
        { "foo.bar", "docker.io/library/foo.bar:latest", NULL, "library/foo.bar", NULL },
        { "a.b.c/d.e_f-g/h__i", "a.b.c/d.e_f-g/h__i:latest", "a.b.c", "d.e_f-g/h__i", NULL },
        { "ubuntu:_x", "docker.io/library/ubuntu:_x", NULL, NULL, "_x" },
        { "ubuntu:X_Y.Z-1", "docker.io/library/ubuntu:X_Y.Z-1", NULL, NULL, "X_Y.Z-1" },
        { "docker.io/library", "docker.io/library/library:latest", NULL, "library/library", NULL },
        { "docker.io/library/a/b", "docker.io/library/a/b:latest", NULL, "library/a/b", NULL },
        { "gcr.io/distroless/static:nonroot", "gcr.io/distroless/static:nonroot", "gcr.io",
          "distroless/static", "nonroot" },
        { "ghcr.io/o/r/s/t/u:v", "ghcr.io/o/r/s/t/u:v", "ghcr.io", "o/r/s/t/u", "v" },
        { "1.2.3.4/x", "1.2.3.4/x:latest", "1.2.3.4", "x", NULL },
        { "xn--bcher-kva.example/x", "xn--bcher-kva.example/x:latest", "xn--bcher-kva.example", "x", NULL },
        { "a0/b1:c2", "docker.io/a0/b1:c2", "docker.io", "a0/b1", "c2" },
        { "0/1", "docker.io/0/1:latest", "docker.io", "0/1", NULL },
        { "localhost/a@sha512:" H64 H64, "localhost/a@sha512:" H64 H64, "localhost", "a", "-" },
        { "r.io:65535/a", "r.io:65535/a:latest", "r.io:65535", "a", NULL },
};

struct bad {
        const char *in;
        const char *msg; /* substring of the error */
};

static const struct bad bads[] = {
        { "", "empty" },
        { "Nginx", "repository name must be lowercase" },
        { "docker.io/Nginx", "repository name must be lowercase" },
        { "user/App", "repository name must be lowercase" },
        { "quay.io/Team/app", "repository name must be lowercase" },
        { "nginx:", "empty tag" },
        { "nginx:-x", "bad tag" },
        { "nginx:.x", "bad tag" },
        { "nginx:a+b", "bad tag \"a+b\": unexpected '+'" },
        { "nginx:" H64 H64 "x", "more than 128" },
        { "nginx@sha256:abc", "bad digest" },
        { "nginx@sha256:" H64 "0", "bad digest" },
        { "nginx@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "bad digest" },
        { "nginx@md5:0123456789abcdef", "bad digest" },
        { "nginx@", "bad digest" },
        { "@" DGST, "empty repository name" },
        { ":tag", "empty repository name" },
        { "localhost:abc/app", "invalid port \"abc\"" },
        { "localhost:0/app", "invalid port \"0\"" },
        { "localhost:65536/app", "invalid port" },
        { "r.io:/app", "invalid port \"\"" },
        { "ng inx", "whitespace at offset 2" },
        { " nginx", "whitespace at offset 0" },
        { "nginx\t", "whitespace at offset 5" },
        { "ngin\x01x", "non-printable" },
        { "ngin\xc3\xa9x", "non-ASCII" },
        { "a//b", "empty component" },
        { "a/b/", "empty component" },
        { "/a", "empty component" },
        { "quay.io/", "empty repository path" },
        { "a..b", "unexpected '.'" },
        { "a___b", "unexpected '_'" },
        { "-a", "unexpected '-' at offset 0" },
        { "a-", "must not end with a separator" },
        { "a.", "must not end with a separator" },
        { "a/b$c", "unexpected '$'" },
        { "a/b:c/d", "unexpected ':'" },
        { H64, "image ID" },
        { "[::1/app", "missing ']'" },
        { "[zz::1]/app", "not an IPv6 address" },
        { "[::1]x/app", "after IPv6 address" },
        { "-a.io/app", "must not start or end with '-'" },
        { "a..io/app", "empty label" },
        { "a_b.io/app", "invalid character '_'" },
};

static void test_good_references(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
                const struct good *g = &goods[i];
                struct image_ref *r = NULL;
                struct berr *e = NULL;
                int rc = image_ref_parse(g->in, &r, &e);
                if (rc < 0)
                        fail_msg("\"%s\" rejected: %s", g->in, berr_msg(e));
                char *s = image_ref_string(r);
                if (strcmp(s, g->out) != 0)
                        fail_msg("\"%s\" -> \"%s\", want \"%s\"", g->in, s, g->out);
                if (g->domain)
                        assert_string_equal(r->domain, g->domain);
                if (g->path)
                        assert_string_equal(r->path, g->path);
                if (g->tag && strcmp(g->tag, "-") == 0)
                        assert_null(r->tag);
                else if (g->tag)
                        assert_string_equal(r->tag, g->tag);
                /* The normalized form is a fixed point. */
                struct image_ref *r2 = NULL;
                assert_int_equal(image_ref_parse(s, &r2, NULL), 0);
                char *s2 = image_ref_string(r2);
                assert_string_equal(s, s2);
                free(s2);
                image_ref_free(r2);
                free(s);
                image_ref_free(r);
        }
}

static void test_bad_references(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
                const struct bad *b = &bads[i];
                struct image_ref *r = NULL;
                struct berr *e = NULL;
                int rc = image_ref_parse(b->in, &r, &e);
                if (rc >= 0) {
                        char *s = image_ref_string(r);
                        fail_msg("\"%s\" accepted as \"%s\"", b->in, s);
                }
                assert_int_equal(rc, -EINVAL);
                assert_non_null(e);
                if (!strstr(berr_msg(e), b->msg))
                        fail_msg("\"%s\": error \"%s\" lacks \"%s\"", b->in, berr_msg(e), b->msg);
                assert_null(r);
                berr_free(e);
        }
}

static void test_null_and_no_err(void **state)
{
        (void)state;
        struct image_ref *r = NULL;
        assert_int_equal(image_ref_parse(NULL, &r, NULL), -EINVAL);
        assert_int_equal(image_ref_parse("A", &r, NULL), -EINVAL);
        assert_null(r);
}

static void test_length_limits(void **state)
{
        (void)state;
        struct berr *e = NULL;
        struct image_ref *r = NULL;
        /* docker.io/library/ + 237 = 255: the longest name Docker accepts. */
        char name[300];
        memset(name, 'a', 237);
        name[237] = '\0';
        assert_int_equal(image_ref_parse(name, &r, &e), 0);
        char *n = image_ref_name(r);
        assert_int_equal(strlen(n), 255);
        free(n);
        image_ref_free(r);
        r = NULL;

        name[237] = 'a';
        name[238] = '\0';
        assert_int_equal(image_ref_parse(name, &r, &e), -EINVAL);
        assert_non_null(strstr(berr_msg(e), "more than 255"));
        berr_free(e);
        e = NULL;

        char *huge = malloc(IMAGE_REF_MAX + 2);
        memset(huge, 'a', IMAGE_REF_MAX + 1);
        huge[IMAGE_REF_MAX + 1] = '\0';
        assert_int_equal(image_ref_parse(huge, &r, &e), -EINVAL);
        assert_non_null(strstr(berr_msg(e), "longer than 4096"));
        berr_free(e);
        free(huge);

        /* A 128-character tag is the maximum. */
        char tagged[200] = "app:";
        memset(tagged + 4, 't', 128);
        tagged[4 + 128] = '\0';
        assert_int_equal(image_ref_parse(tagged, &r, NULL), 0);
        assert_int_equal(strlen(r->tag), 128);
        image_ref_free(r);
}

static void test_accessors(void **state)
{
        (void)state;
        struct image_ref *r = NULL;
        assert_int_equal(image_ref_parse("nginx:1", &r, NULL), 0);
        assert_string_equal(image_ref_api_host(r), "registry-1.docker.io");
        assert_string_equal(image_ref_object(r), "1");
        char *n = image_ref_name(r);
        assert_string_equal(n, "docker.io/library/nginx");
        free(n);
        image_ref_free(r);

        assert_int_equal(image_ref_parse("localhost:5000/a:t@" DGST, &r, NULL), 0);
        assert_string_equal(image_ref_api_host(r), "localhost:5000");
        assert_string_equal(image_ref_object(r), DGST); /* the digest wins */
        assert_string_equal(r->tag, "t");
        image_ref_free(r);

        assert_int_equal(image_ref_parse("quay.io/a/b", &r, NULL), 0);
        assert_string_equal(image_ref_api_host(r), "quay.io");
        assert_string_equal(image_ref_object(r), "latest");
        image_ref_free(r);
        image_ref_free(NULL);
}

static void test_loopback(void **state)
{
        (void)state;
        static const char *const yes[] = { "localhost", "localhost:5000", "LocalHost:1",
                                           "127.0.0.1", "127.1.2.3:80",   "127.255.255.255",
                                           "[::1]",     "[::1]:5000",     "[0:0:0:0:0:0:0:1]:5000" };
        static const char *const no[] = { "",
                                          "localhost.example",
                                          "localhost:",
                                          "localhost:x",
                                          "localhost:0",
                                          "128.0.0.1",
                                          "10.0.0.1",
                                          "127.0.0",
                                          "127.0.0.256",
                                          "[::2]",
                                          "[::1",
                                          "[::1]x",
                                          "docker.io",
                                          "[::1]:",
                                          "1.127.0.0.1" };
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
                if (!image_ref_domain_is_loopback(yes[i]))
                        fail_msg("\"%s\" should be loopback", yes[i]);
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
                if (image_ref_domain_is_loopback(no[i]))
                        fail_msg("\"%s\" should not be loopback", no[i]);
        assert_false(image_ref_domain_is_loopback(NULL));

        struct image_ref *r = NULL;
        assert_int_equal(image_ref_parse("127.0.0.1:5000/x", &r, NULL), 0);
        assert_true(image_ref_domain_is_loopback(r->domain));
        image_ref_free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_references), cmocka_unit_test(test_bad_references),
                cmocka_unit_test(test_null_and_no_err), cmocka_unit_test(test_length_limits),
                cmocka_unit_test(test_accessors),       cmocka_unit_test(test_loopback),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
