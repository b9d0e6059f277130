/* SPDX-License-Identifier: Apache-2.0 */
/* `berth logs` (src/cli/app_logs.c): cf's line format, and following across reconnections. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/app_logs.h"
#include "lib/json.h"

static char *printed(const json_t *x)
{
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        app_logs_print(f, x);
        fclose(f);
        return buf;
}

static void test_format(void **state)
{
        (void)state;
        _cleanup_json_ json_t *a =
            json_pack("{s:s,s:s,s:i,s:s,s:s}", "timestamp", "2026-11-28T18:00:00.123456789Z", "source_type",
                      "APP/PROC/WEB", "instance_index", 1, "message_type", "ERR", "message", "boom");
        char *s = printed(a);
        assert_string_equal(s, "   2026-11-28T18:00:00.12+0000 [APP/PROC/WEB/1] ERR boom\n");
        free(s);
        /* whole seconds; no index (a platform source); a timestamp of another shape as it came */
        _cleanup_json_ json_t *b =
            json_pack("{s:s,s:s,s:n,s:s,s:s}", "timestamp", "2026-11-28T18:00:00Z", "source_type", "API",
                      "instance_index", "message_type", "OUT", "message", "Updated app");
        s = printed(b);
        assert_string_equal(s, "   2026-11-28T18:00:00.00+0000 [API] OUT Updated app\n");
        free(s);
        _cleanup_json_ json_t *c =
            json_pack("{s:s,s:s,s:i,s:s,s:s}", "timestamp", "yesterday", "source_type", "CELL",
                      "instance_index", 0, "message_type", "OUT", "message", "x");
        s = printed(c);
        assert_string_equal(s, "   yesterday [CELL/0] OUT x\n");
        free(s);
}

#define L(t, i, m)                                                                                           \
        "{\"timestamp\":\"2026-11-28T18:00:0" t ".000000000Z\",\"source_type\":\"APP/PROC/WEB\",\"instance_" \
        "index\":" #i ",\"message_type\":\"OUT\",\"message\":\"" m "\"}\n"

struct run {
        char *buf;
        size_t n;
        FILE *out;
        struct app_logs_follow f;
};

static void run_open(struct run *r)
{
        memset(r, 0, sizeof(*r));
        r->out = open_memstream(&r->buf, &r->n);
        r->f.out = r->out;
}

static void feed(struct run *r, bool reconnected, const char *data)
{
        app_logs_follow_begin(&r->f, reconnected);
        /* in pieces, as a stream delivers it */
        size_t n = strlen(data);
        for (size_t i = 0; i < n; i += 7)
                app_logs_follow_data(data + i, n - i < 7 ? n - i : 7, &r->f);
}

static char *run_close(struct run *r)
{
        app_logs_follow_done(&r->f);
        fclose(r->out);
        return r->buf;
}

static void test_follow_reconnect_skips_repeats(void **state)
{
        (void)state;
        struct run r;
        run_open(&r);
        feed(&r, false, L("1", 0, "a") "\n" L("2", 0, "b") L("2", 1, "b1"));
        /* the stream ends; a new one replays recent lines (some at the newest time) and goes on */
        feed(&r, true, L("1", 0, "a") L("2", 0, "b") L("2", 1, "b1") L("2", 1, "b2") L("3", 0, "c"));
        feed(&r, true, L("1", 0, "a") L("2", 0, "b") L("2", 1, "b1") L("2", 1, "b2") L("3", 0, "c") "\n\n");
        feed(&r, true, L("3", 0, "c") L("4", 0, "d"));
        assert_int_equal(r.f.printed, 6);
        char *out = run_close(&r);
        assert_string_equal(out, "   2026-11-28T18:00:01.00+0000 [APP/PROC/WEB/0] OUT a\n"
                                 "   2026-11-28T18:00:02.00+0000 [APP/PROC/WEB/0] OUT b\n"
                                 "   2026-11-28T18:00:02.00+0000 [APP/PROC/WEB/1] OUT b1\n"
                                 "   2026-11-28T18:00:02.00+0000 [APP/PROC/WEB/1] OUT b2\n"
                                 "   2026-11-28T18:00:03.00+0000 [APP/PROC/WEB/0] OUT c\n"
                                 "   2026-11-28T18:00:04.00+0000 [APP/PROC/WEB/0] OUT d\n");
        free(out);
}

static void test_follow_within_a_stream_prints_everything(void **state)
{
        (void)state;
        struct run r;
        run_open(&r);
        /* instance 1's line at :2 arrives after instance 0's at :3: still printed; an identical line later
         * in the same stream is the app's own repetition, printed too */
        feed(&r, false, L("3", 0, "c") L("2", 1, "late") L("4", 0, "same") L("4", 0, "same"));
        assert_int_equal(r.f.printed, 4);
        /* junk, an overlong line and non-objects are skipped */
        char *big = malloc(APP_LOGS_LINE_MAX + 10);
        memset(big, 'x', APP_LOGS_LINE_MAX + 8);
        big[APP_LOGS_LINE_MAX + 8] = '\n';
        big[APP_LOGS_LINE_MAX + 9] = 0;
        app_logs_follow_data(big, APP_LOGS_LINE_MAX + 9, &r.f);
        free(big);
        app_logs_follow_data("not json\n[1]\n{\"timestamp\":3}\n", 30, &r.f);
        feed(&r, false, L("5", 0, "e"));
        assert_int_equal(r.f.printed, 5);
        char *out = run_close(&r);
        assert_non_null(strstr(out, "OUT late\n"));
        assert_non_null(strstr(out, "OUT e\n"));
        free(out);
}

static void test_follow_json(void **state)
{
        (void)state;
        struct run r;
        run_open(&r);
        r.f.json = true;
        feed(&r, false, L("1", 0, "a"));
        char *out = run_close(&r);
        _cleanup_json_ json_t *j = json_loads(out, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(j, "message")), "a");
        free(out);
}

static int idle_calls;
static int idle_answer;

static int on_idle(void *userdata)
{
        (void)userdata;
        idle_calls++;
        return idle_answer;
}

static void test_follow_keepalives_ask_idle(void **state)
{
        (void)state;
        struct run r;
        run_open(&r);
        r.f.idle = on_idle;
        idle_calls = idle_answer = 0;
        feed(&r, false, L("1", 0, "a") "\n" L("2", 0, "b") "\n\n");
        assert_int_equal(idle_calls, 3);
        assert_int_equal(r.f.printed, 2);
        idle_answer = -ENOENT;
        app_logs_follow_begin(&r.f, false);
        assert_int_equal(app_logs_follow_data(L("3", 0, "c"), strlen(L("3", 0, "c")), &r.f), 0);
        assert_int_equal(app_logs_follow_data("\n", 1, &r.f), -ENOENT);
        free(run_close(&r));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_follow_reconnect_skips_repeats),
                cmocka_unit_test(test_follow_within_a_stream_prints_everything),
                cmocka_unit_test(test_follow_json),
                cmocka_unit_test(test_follow_keepalives_ask_idle),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
