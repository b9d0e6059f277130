/* SPDX-License-Identifier: Apache-2.0 */
/* `berth logs`: cf's line format and the follow stream's reader (src/cli/app_logs.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/app_logs.h"
#include "lib/json.h"
#include "lib/macro.h"

void app_logs_print(FILE *out, const json_t *x)
{
        const char *ts = json_string_value(json_object_get(x, "timestamp")) ?: "";
        char shown[64];
        size_t n = strlen(ts);
        if (n >= 20 && n < 40 && ts[10] == 'T' && ts[n - 1] == 'Z') {
                char frac[3] = "00";
                if (ts[19] == '.')
                        for (size_t i = 0; i < 2 && isdigit((unsigned char)ts[20 + i]); i++)
                                frac[i] = ts[20 + i];
                snprintf(shown, sizeof(shown), "%.19s.%s+0000", ts, frac);
        } else {
                snprintf(shown, sizeof(shown), "%s", ts);
        }
        const char *src = json_string_value(json_object_get(x, "source_type")) ?: "";
        json_t *idx = json_object_get(x, "instance_index");
        char tag[96];
        if (json_is_integer(idx))
                snprintf(tag, sizeof(tag), "%s/%lld", src, (long long)json_integer_value(idx));
        else
                snprintf(tag, sizeof(tag), "%s", src);
        fprintf(out, "   %s [%s] %s %s\n", shown, tag,
                json_string_value(json_object_get(x, "message_type")) ?: "",
                json_string_value(json_object_get(x, "message")) ?: "");
}

static void follow_entry(struct app_logs_follow *f, json_t *x)
{
        const char *ts = json_string_value(json_object_get(x, "timestamp"));
        if (!ts || strlen(ts) >= sizeof(f->last))
                return;
        int c = strcmp(ts, f->last);
        _cleanup_free_ char *key =
            xasprintf("%s\t%lld\t%s\t%s", json_string_value(json_object_get(x, "source_type")) ?: "",
                      (long long)json_integer_value(json_object_get(x, "instance_index")),
                      json_string_value(json_object_get(x, "message_type")) ?: "",
                      json_string_value(json_object_get(x, "message")) ?: "");
        if (f->replay) {
                /* recent lines, oldest first: skip up to the first one not printed yet */
                if (c < 0)
                        return;
                if (c == 0)
                        for (size_t i = 0; i < f->seen.n; i++)
                                if (strcmp(f->seen.v[i], key) == 0)
                                        return;
                f->replay = false;
        }
        /* Within a stream a line may come after a newer one (another instance's, fetched later): print it,
         * but the newest timestamp stays. */
        if (c > 0) {
                strv_clear(&f->seen);
                snprintf(f->last, sizeof(f->last), "%s", ts);
        }
        if (c >= 0 && f->seen.n < APP_LOGS_SEEN_MAX)
                strv_push(&f->seen, TAKE_PTR(key));
        if (f->json) {
                _cleanup_free_ char *s = json_dumps(x, JSON_COMPACT);
                fprintf(f->out, "%s\n", s ?: "null");
        } else {
                app_logs_print(f->out, x);
        }
        fflush(f->out);
        f->printed++;
}

void app_logs_follow_begin(struct app_logs_follow *f, bool reconnected)
{
        f->len = 0;
        f->overlong = false;
        f->replay = reconnected;
}

int app_logs_follow_data(const char *data, size_t len, void *userdata)
{
        struct app_logs_follow *f = userdata;
        for (size_t i = 0; i < len; i++) {
                if (data[i] != '\n') {
                        if (f->len >= APP_LOGS_LINE_MAX) {
                                f->overlong = true;
                                continue;
                        }
                        if (!f->buf)
                                f->buf = xmalloc(APP_LOGS_LINE_MAX);
                        f->buf[f->len++] = data[i];
                        continue;
                }
                bool blank = f->len == 0 && !f->overlong;
                if (f->len > 0 && !f->overlong) {
                        _cleanup_json_ json_t *x = json_loadb(f->buf, f->len, 0, NULL);
                        if (json_is_object(x))
                                follow_entry(f, x);
                }
                f->len = 0;
                f->overlong = false;
                if (blank && f->idle) {
                        int r = f->idle(f->idle_userdata);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

void app_logs_follow_done(struct app_logs_follow *f)
{
        strv_clear(&f->seen);
        free(f->buf);
        f->buf = NULL;
}
