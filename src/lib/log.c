/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/log.h"

static enum log_level threshold = LOG_LEVEL_WARN;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_init(enum log_level default_level)
{
        const char *e = getenv("BERTH_LOG_LEVEL");
        threshold = default_level;
        if (!e)
                return;
        static const char *names[] = { "error", "warn", "info", "debug" };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (strcasecmp(e, names[i]) == 0)
                        threshold = (enum log_level)i;
}

void log_set_level(enum log_level level)
{
        threshold = level;
}

enum log_level log_get_level(void)
{
        return threshold;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        static const char *tags[] = { "error", "warn", "info", "debug" };
        if (level > threshold)
                return;
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        va_list ap;
        va_start(ap, fmt);
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s.%03ldZ %-5s ", stamp, ts.tv_nsec / 1000000, tags[level]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        pthread_mutex_unlock(&log_lock);
        va_end(ap);
}
