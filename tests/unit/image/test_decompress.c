/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include <cmocka.h>

#include "image/decompress.h"

/* decompress.c: run the zlib path even when ISA-L is built in. */
extern bool decompress_force_zlib;

/* A source handing out a memory buffer in chunks of `chunk` bytes (the last may be shorter). */
struct memsrc {
        const uint8_t *p;
        size_t len, pos, chunk;
        int fail_at; /* >0: return -EIO on that call number */
        int calls;
        const void *last;    /* the last chunk handed out */
        const size_t *sizes; /* if set: chunk sizes to cycle through (0-terminated) instead of `chunk` */
        size_t k;
};

static ssize_t memsrc_read(void *userdata, const void **ret_buf, struct berr **err)
{
        struct memsrc *s = userdata;
        if (s->fail_at && ++s->calls == s->fail_at)
                return berr_set(err, -EIO, "network went away");
        size_t want = s->chunk;
        if (s->sizes) {
                if (!s->sizes[s->k])
                        s->k = 0;
                want = s->sizes[s->k++];
        }
        size_t n = MIN(want, s->len - s->pos);
        *ret_buf = s->p + s->pos;
        s->last = *ret_buf;
        s->pos += n;
        return (ssize_t)n;
}

#include "../testbuf.h"

/* Decompress all of `in` (fed in `chunk`-byte pieces); returns the code, output in *out. */
/* Mixed small and large chunks (chunk == 0 in run()): gathering small ones, splitting at large ones. */
static const size_t mixed_sizes[] = { 3, 100, 2 * 1024 * 1024, 5000, 70000, 16384, 16384, 900000, 1, 0 };

static int run(enum layer_compression declared, const void *in, size_t len, size_t chunk, struct buf *out,
               const char **ret_fmt, struct berr **err)
{
        struct memsrc s = { .p = in, .len = len, .chunk = chunk, .sizes = chunk ? NULL : mixed_sizes };
        struct decompressor *d = NULL;
        int r = decompressor_new(declared, memsrc_read, &s, &d, err);
        if (r < 0)
                return r;
        for (;;) {
                const void *b;
                ssize_t n = decompressor_read(d, &b, err);
                if (n < 0) {
                        r = (int)n;
                        break;
                }
                if (n == 0)
                        break;
                assert_true(n <= 1024 * 1024);
                buf_add(out, b, (size_t)n);
        }
        static char fmt[16];
        snprintf(fmt, sizeof(fmt), "%s", decompressor_format(d));
        if (ret_fmt)
                *ret_fmt = fmt;
        if (r == 0)
                assert_int_equal(s.pos, s.len); /* the source was drained */
        decompressor_free(d);
        return r;
}

/* Semi-realistic data: text-like runs and some noise, so compression is neither trivial nor absent. */
static uint8_t *make_data(size_t n, unsigned seed)
{
        uint8_t *p = xmalloc(n);
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
                x = x * 1103515245u + 12345u;
                p[i] = (i / 64) % 3 == 0 ? (uint8_t)(x >> 24) : (uint8_t)("the quick brown fox "[i % 20]);
        }
        return p;
}

static void gzip_member(struct buf *out, const void *data, size_t n)
{
        z_stream z = { 0 };
        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
        size_t cap = deflateBound(&z, (uLong)n);
        uint8_t *tmp = xmalloc(cap);
        z.next_in = (Bytef *)data;
        z.avail_in = (uInt)n;
        z.next_out = tmp;
        z.avail_out = (uInt)cap;
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        buf_add(out, tmp, cap - z.avail_out);
        deflateEnd(&z);
        free(tmp);
}

static void zstd_frame(struct buf *out, const void *data, size_t n)
{
        size_t cap = ZSTD_compressBound(n);
        uint8_t *tmp = xmalloc(cap);
        /* With a content checksum, as the zstd CLI writes by default: corruption is then detected. */
        ZSTD_CCtx *cc = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
        size_t r = ZSTD_compress2(cc, tmp, cap, data, n);
        assert_false(ZSTD_isError(r));
        ZSTD_freeCCtx(cc);
        buf_add(out, tmp, r);
        free(tmp);
}

static void skippable_frame(struct buf *out, const char *payload)
{
        uint8_t h[8] = { 0x5e, 0x2a, 0x4d, 0x18 };
        uint32_t n = (uint32_t)strlen(payload);
        for (int i = 0; i < 4; i++)
                h[4 + i] = (uint8_t)(n >> (8 * i));
        buf_add(out, h, 8);
        buf_add(out, payload, n);
}

static void check_gzip_single(size_t chunk)
{
        size_t n = 3 * 1024 * 1024 + 17;
        _cleanup_free_ uint8_t *data = make_data(n, 1);
        struct buf gz = { 0 }, out = { 0 };
        gzip_member(&gz, data, n);
        const char *fmt;
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(run(COMPRESSION_GZIP, gz.p, gz.len, chunk, &out, &fmt, &err), 0);
        assert_string_equal(fmt, "gzip");
        assert_int_equal(out.len, n);
        assert_memory_equal(out.p, data, n);
        free(gz.p);
        free(out.p);
}

static void test_gzip_single(void **state)
{
        (void)state;
        for (int z = 0; z < 2; z++) {
                decompress_force_zlib = z;
                check_gzip_single(64 * 1024);
                check_gzip_single(1); /* one byte at a time: the sniff must gather the magic */
                check_gzip_single(SIZE_MAX);
                check_gzip_single(16384); /* curl-sized chunks are gathered */
                check_gzip_single(0);
        }
        decompress_force_zlib = false;
}

/* A tiny input expanding far beyond the 1 MiB output buffer: the decoder must be drained after the
 * source is exhausted, not declared truncated. */
static void test_gzip_expands_past_buffer(void **state)
{
        (void)state;
        size_t n = 5 * 1024 * 1024;
        _cleanup_free_ uint8_t *zeros = xcalloc(1, n);
        struct buf gz = { 0 };
        gzip_member(&gz, zeros, n);
        assert_true(gz.len < 64 * 1024);
        for (int z = 0; z < 2; z++) {
                decompress_force_zlib = z;
                struct buf out = { 0 };
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(run(COMPRESSION_GZIP, gz.p, gz.len, SIZE_MAX, &out, NULL, &err), 0);
                assert_int_equal(out.len, n);
                assert_memory_equal(out.p, zeros, n);
                free(out.p);
        }
        decompress_force_zlib = false;
        free(gz.p);
}

static void test_gzip_multi_member_and_padding(void **state)
{
        (void)state;
        size_t n1 = 1500000, n2 = 700001;
        _cleanup_free_ uint8_t *d1 = make_data(n1, 2);
        _cleanup_free_ uint8_t *d2 = make_data(n2, 3);
        struct buf gz = { 0 }, want = { 0 };
        gzip_member(&gz, d1, n1);
        gzip_member(&gz, d2, n2);
        gzip_member(&gz, "", 0); /* an empty member is legal */
        buf_add(&want, d1, n1);
        buf_add(&want, d2, n2);
        size_t plain_len = gz.len;
        uint8_t zeros[1000] = { 0 };
        for (int z = 0; z < 2; z++) {
                decompress_force_zlib = z;
                size_t chunks[] = { 1, 7, 4096, 0, SIZE_MAX };
                for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
                        for (int pad = 0; pad < 2; pad++) {
                                gz.len = plain_len;
                                if (pad)
                                        buf_add(&gz, zeros, sizeof(zeros));
                                struct buf out = { 0 };
                                _cleanup_berr_ struct berr *err = NULL;
                                int r = run(COMPRESSION_GZIP, gz.p, gz.len, chunks[c], &out, NULL, &err);
                                assert_int_equal(r, 0);
                                assert_int_equal(out.len, want.len);
                                assert_memory_equal(out.p, want.p, want.len);
                                free(out.p);
                        }
                }
                /* Padding followed by anything else is corrupt, as is garbage after a member. */
                gz.len = plain_len;
                buf_add(&gz, zeros, 10);
                buf_add(&gz, "x", 1);
                struct buf out = { 0 };
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(run(COMPRESSION_GZIP, gz.p, gz.len, 4096, &out, NULL, &err), -EBADMSG);
                assert_non_null(strstr(berr_msg(err), "after the end"));
                free(out.p);
                gz.len = plain_len;
                buf_add(&gz, "garbage", 7);
                out = (struct buf){ 0 };
                berr_freep(&err);
                assert_int_equal(run(COMPRESSION_GZIP, gz.p, gz.len, 4096, &out, NULL, &err), -EBADMSG);
                free(out.p);
        }
        decompress_force_zlib = false;
        free(gz.p);
        free(want.p);
}

static void test_gzip_corrupt(void **state)
{
        (void)state;
        size_t n = 2000000;
        _cleanup_free_ uint8_t *data = make_data(n, 4);
        struct buf gz = { 0 };
        gzip_member(&gz, data, n);
        for (int z = 0; z < 2; z++) {
                decompress_force_zlib = z;
                /* Truncated: the stream ends inside the member. */
                struct buf out = { 0 };
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(run(COMPRESSION_GZIP, gz.p, gz.len / 2, 4096, &out, NULL, &err), -EBADMSG);
                assert_non_null(strstr(berr_msg(err), "truncated"));
                free(out.p);
                /* CRC-32 of the trailer wrong. */
                uint8_t *bad = xmalloc(gz.len);
                memcpy(bad, gz.p, gz.len);
                bad[gz.len - 6] ^= 0x55;
                out = (struct buf){ 0 };
                berr_freep(&err);
                assert_int_equal(run(COMPRESSION_GZIP, bad, gz.len, 4096, &out, NULL, &err), -EBADMSG);
                assert_non_null(strstr(berr_msg(err), "gzip"));
                free(out.p);
                /* Damaged deflate data. */
                memcpy(bad, gz.p, gz.len);
                for (size_t i = 100; i < 200; i++)
                        bad[i] = 0xff;
                out = (struct buf){ 0 };
                berr_freep(&err);
                assert_int_equal(run(COMPRESSION_GZIP, bad, gz.len, 4096, &out, NULL, &err), -EBADMSG);
                free(out.p);
                free(bad);
                /* Only the magic. */
                out = (struct buf){ 0 };
                berr_freep(&err);
                assert_int_equal(run(COMPRESSION_GZIP, "\x1f\x8b", 2, 1, &out, NULL, &err), -EBADMSG);
                free(out.p);
        }
        decompress_force_zlib = false;
        free(gz.p);
}

static void test_zstd_frames(void **state)
{
        (void)state;
        size_t n1 = 2500000, n2 = 300000;
        _cleanup_free_ uint8_t *d1 = make_data(n1, 5);
        _cleanup_free_ uint8_t *d2 = make_data(n2, 6);
        struct buf z = { 0 }, want = { 0 };
        skippable_frame(&z, "leading skippable frame");
        zstd_frame(&z, d1, n1);
        skippable_frame(&z, "zstd:chunked keeps its TOC in frames like this");
        zstd_frame(&z, d2, n2);
        skippable_frame(&z, "");
        buf_add(&want, d1, n1);
        buf_add(&want, d2, n2);
        size_t chunks[] = { 1, 5, 65536, 0, SIZE_MAX };
        for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
                struct buf out = { 0 };
                const char *fmt;
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(run(COMPRESSION_ZSTD, z.p, z.len, chunks[c], &out, &fmt, &err), 0);
                assert_string_equal(fmt, "zstd");
                assert_int_equal(out.len, want.len);
                assert_memory_equal(out.p, want.p, want.len);
                free(out.p);
        }
        /* Zero padding after the last frame is tolerated, anything after it is not. */
        size_t zlen = z.len;
        uint8_t zeros[700] = { 0 };
        buf_add(&z, zeros, sizeof(zeros));
        struct buf out = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(run(COMPRESSION_ZSTD, z.p, z.len, 4096, &out, NULL, &err), 0);
        assert_int_equal(out.len, want.len);
        free(out.p);
        buf_add(&z, "\x28", 1);
        out = (struct buf){ 0 };
        assert_int_equal(run(COMPRESSION_ZSTD, z.p, z.len, 4096, &out, NULL, &err), -EBADMSG);
        assert_non_null(strstr(berr_msg(err), "after the end"));
        free(out.p);
        berr_freep(&err);
        z.len = zlen;
        /* Truncated inside a frame. */
        out = (struct buf){ 0 };
        assert_int_equal(run(COMPRESSION_ZSTD, z.p, z.len / 2, 4096, &out, NULL, &err), -EBADMSG);
        assert_non_null(strstr(berr_msg(err), "truncated"));
        free(out.p);
        /* Corrupt frame data. */
        uint8_t *bad = xmalloc(z.len);
        memcpy(bad, z.p, z.len);
        for (size_t i = 10000; i < 10400; i++)
                bad[i] ^= 0xa5;
        out = (struct buf){ 0 };
        berr_freep(&err);
        assert_int_equal(run(COMPRESSION_ZSTD, bad, z.len, 4096, &out, NULL, &err), -EBADMSG);
        assert_non_null(strstr(berr_msg(err), "zstd"));
        free(out.p);
        free(bad);
        free(z.p);
        free(want.p);
}

static void test_none_passthrough(void **state)
{
        (void)state;
        size_t n = 1000003;
        _cleanup_free_ uint8_t *data = make_data(n, 7);
        data[0] = 'e'; /* a tar starts with a file name */
        size_t chunks[] = { 1, 3, 6, 100000, 0, SIZE_MAX };
        for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
                struct buf out = { 0 };
                const char *fmt;
                _cleanup_berr_ struct berr *err = NULL;
                /* The declared type is only a hint: the bytes say "none". */
                assert_int_equal(run(COMPRESSION_GZIP, data, n, chunks[c], &out, &fmt, &err), 0);
                assert_string_equal(fmt, "none");
                assert_int_equal(out.len, n);
                assert_memory_equal(out.p, data, n);
                free(out.p);
        }
        /* Zero-copy: the chunk handed out is the source's own buffer. */
        struct memsrc s = { .p = data, .len = n, .chunk = 65536 };
        struct decompressor *d = NULL;
        assert_int_equal(decompressor_new(COMPRESSION_NONE, memsrc_read, &s, &d, NULL), 0);
        const void *b;
        assert_int_equal(decompressor_read(d, &b, NULL), 65536);
        assert_ptr_equal(b, data);
        assert_int_equal(decompressor_read(d, &b, NULL), 65536);
        assert_ptr_equal(b, data + 65536);
        decompressor_free(d);
        /* An empty stream is an empty "none" stream. */
        struct buf out = { 0 };
        const char *fmt;
        assert_int_equal(run(COMPRESSION_NONE, "", 0, 10, &out, &fmt, NULL), 0);
        assert_int_equal(out.len, 0);
        assert_string_equal(fmt, "none");
        free(out.p);
}

static void test_refused_formats(void **state)
{
        (void)state;
        static const uint8_t xz[] = { 0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6 };
        static const char bz[] = "BZh91AY&SY\x01\x02\x03";
        size_t chunks[] = { 1, SIZE_MAX };
        for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
                struct buf out = { 0 };
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(run(COMPRESSION_GZIP, xz, sizeof(xz), chunks[c], &out, NULL, &err),
                                 -EPROTONOSUPPORT);
                assert_string_equal(berr_msg(err), "xz-compressed layers are not supported");
                berr_freep(&err);
                assert_int_equal(run(COMPRESSION_NONE, bz, sizeof(bz) - 1, chunks[c], &out, NULL, &err),
                                 -EPROTONOSUPPORT);
                assert_non_null(strstr(berr_msg(err), "bzip2"));
                free(out.p);
        }
}

static void test_source_error(void **state)
{
        (void)state;
        size_t n = 300000;
        _cleanup_free_ uint8_t *data = make_data(n, 8);
        struct buf gz = { 0 };
        gzip_member(&gz, data, n);
        for (int fail_at = 1; fail_at <= 3; fail_at++) {
                struct memsrc s = { .p = gz.p, .len = gz.len, .chunk = 1024, .fail_at = fail_at };
                struct decompressor *d = NULL;
                _cleanup_berr_ struct berr *err = NULL;
                assert_int_equal(decompressor_new(COMPRESSION_GZIP, memsrc_read, &s, &d, &err), 0);
                const void *b;
                ssize_t r;
                while ((r = decompressor_read(d, &b, &err)) > 0)
                        ;
                assert_int_equal(r, -EIO);
                assert_non_null(strstr(berr_msg(err), "network went away"));
                /* The error sticks: the source is not read past its failure. */
                int calls = s.calls;
                assert_int_equal(decompressor_read(d, &b, NULL), -EIO);
                assert_int_equal(s.calls, calls);
                decompressor_free(d);
        }
        free(gz.p);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_gzip_single),
                cmocka_unit_test(test_gzip_expands_past_buffer),
                cmocka_unit_test(test_gzip_multi_member_and_padding),
                cmocka_unit_test(test_gzip_corrupt),
                cmocka_unit_test(test_zstd_frames),
                cmocka_unit_test(test_none_passthrough),
                cmocka_unit_test(test_refused_formats),
                cmocka_unit_test(test_source_error),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
