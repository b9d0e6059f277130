/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The parts of the container library that need no image: signal names, lookups by name/id/prefix, and the
 * log reader over hand-written CRI log files (tail across rotated files, partial records, malformed lines).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../testbuf.h"
#include "cell/container.h"
#include "lib/fs.h"

#define ID_A "aaaa000000000000000000000000000000000000000000000000000000000001"
#define ID_B "aaab000000000000000000000000000000000000000000000000000000000002"

struct fixture {
        char dir[64];
        struct cell *cell;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        snprintf(f->dir, sizeof(f->dir), "/tmp/berth-test-ctr-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        struct cell_config cfg = { .data_dir = f->dir, .log_files = 3 };
        struct berr *err = NULL;
        if (cell_open(&cfg, &f->cell, &err) < 0)
                return -1;
        char p[256];
        const char *ids[] = { ID_A, ID_B };
        for (size_t i = 0; i < 2; i++) {
                snprintf(p, sizeof(p), "%s/cell/containers/%s", f->dir, ids[i]);
                mkdir(p, 0700);
                snprintf(p, sizeof(p), "%s/cell/containers/%s/container.json", f->dir, ids[i]);
                fs_write_file_replace_at(AT_FDCWD, p, "{}", 2, 0600);
        }
        snprintf(p, sizeof(p), "%s/cell/names/web", f->dir);
        if (symlink(ID_B, p) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        cell_close(f->cell);
        fs_rm_rf_at(AT_FDCWD, f->dir);
        free(f);
        return 0;
}

static void write_log(struct fixture *f, const char *name, const char *text)
{
        char p[256];
        snprintf(p, sizeof(p), "%s/cell/containers/%s/%s", f->dir, ID_A, name);
        assert_int_equal(fs_write_file_replace_at(AT_FDCWD, p, text, strlen(text), 0600), 0);
}

static int collect(int stream, const char *time, const char *text, size_t len, void *ud)
{
        struct buf *b = ud;
        char head[64];
        snprintf(head, sizeof(head), "%d|%.10s|", stream, time);
        buf_add(b, head, strlen(head));
        buf_add(b, text, len);
        return 0;
}

static char *read_logs(struct fixture *f, long tail)
{
        struct buf b = { 0 };
        struct cell_log_opts o = { .tail = tail, .log_fd = -1, .end_fd = -1, .proxy_signal_fd = -1 };
        struct berr *err = NULL;
        if (cell_container_logs(f->cell, ID_A, &o, collect, &b, &err) < 0)
                fail_msg("%s", berr_msg(err));
        buf_add(&b, "", 1);
        return (char *)b.p;
}

static void test_signals(void **state)
{
        (void)state;
        assert_int_equal(cell_signal_parse("SIGTERM"), SIGTERM);
        assert_int_equal(cell_signal_parse("term"), SIGTERM);
        assert_int_equal(cell_signal_parse("SIGQUIT"), SIGQUIT);
        assert_int_equal(cell_signal_parse("9"), SIGKILL);
        assert_int_equal(cell_signal_parse("RTMIN+3"), SIGRTMIN + 3);
        assert_int_equal(cell_signal_parse(""), SIGTERM);
        assert_int_equal(cell_signal_parse(NULL), SIGTERM);
        assert_int_equal(cell_signal_parse("SIGNOPE"), -1);
        assert_int_equal(cell_signal_parse("0"), -1);
        assert_int_equal(cell_signal_parse("65"), -1);
        assert_int_equal(cell_signal_parse("RTMIN+99"), -1);
}

static void test_lookup(void **state)
{
        struct fixture *f = *state;
        struct berr *err = NULL;
        char *id = NULL;
        assert_int_equal(cell_container_lookup(f->cell, ID_A, &id, &err), 0);
        assert_string_equal(id, ID_A);
        free(id);
        assert_int_equal(cell_container_lookup(f->cell, "web", &id, &err), 0);
        assert_string_equal(id, ID_B);
        free(id);
        assert_int_equal(cell_container_lookup(f->cell, "aaab", &id, &err), 0);
        assert_string_equal(id, ID_B);
        free(id);
        assert_int_equal(cell_container_lookup(f->cell, "aaa", &id, &err), -EINVAL);
        assert_non_null(strstr(berr_msg(err), "multiple containers"));
        berr_free(err);
        err = NULL;
        const char *bad[] = { "", "../x", "a/b", ".hidden", "nope" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_true(cell_container_lookup(f->cell, bad[i], &id, &err) < 0);
                berr_free(err);
                err = NULL;
        }
}

static void test_logs_tail_rotation_partials(void **state)
{
        struct fixture *f = *state;
        /* Oldest in .2, then .1, then the live file; a long line split in partial records across files. */
        write_log(f, "container.log.2",
                  "2026-01-01T00:00:01.000000000Z stdout F one\n"
                  "2026-01-01T00:00:02.000000000Z stderr F two\n");
        write_log(f, "container.log.1",
                  "2026-01-01T00:00:03.000000000Z stdout F three\n"
                  "garbage without fields\n"
                  "2026-01-01T00:00:04.000000000Z stdout P long-\n");
        write_log(f, "container.log",
                  "2026-01-01T00:00:05.000000000Z stdout P part-\n"
                  "2026-01-01T00:00:06.000000000Z stderr F interleaved\n"
                  "2026-01-01T00:00:07.000000000Z stdout F end\n"
                  "2026-01-01T00:00:08.000000000Z stdout F \n"
                  "2026-01-01T00:00:09.000000000Z stdout F incomplete-no-newline");
        char *all = read_logs(f, -1);
        assert_string_equal(all, "1|2026-01-01|one\n2|2026-01-01|two\n1|2026-01-01|three\n"
                                 "1|2026-01-01|long-1|2026-01-01|part-2|2026-01-01|interleaved\n"
                                 "1|2026-01-01|end\n1|2026-01-01|\n");
        free(all);
        /* Tail joins partial records into one line, per stream. */
        char *t = read_logs(f, 3);
        assert_string_equal(t, "2|2026-01-01|interleaved\n1|2026-01-01|long-part-end\n1|2026-01-01|\n");
        free(t);
        t = read_logs(f, 0);
        assert_string_equal(t, "");
        free(t);
        t = read_logs(f, 100);
        assert_non_null(strstr(t, "one\n"));
        free(t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_signals),
                cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
                cmocka_unit_test_setup_teardown(test_logs_tail_rotation_partials, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
