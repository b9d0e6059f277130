/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An app's log entries as `berth logs` prints them, and the reader of the controller's NDJSON follow
 * stream (GET /v3/apps/:guid/logs?follow=true) that never prints a line twice across reconnections.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "lib/strv.h"

#define APP_LOGS_LINE_MAX (256 * 1024) /* one NDJSON line; longer ones are dropped */
#define APP_LOGS_SEEN_MAX 4096         /* entries remembered at the newest timestamp */

/*
 * One entry ({"timestamp","source_type","instance_index","message_type","message"}) as cf prints it:
 * "   2026-11-28T18:00:00.12+0000 [APP/PROC/WEB/0] OUT text". A timestamp that is not RFC 3339 UTC is shown
 * as it came.
 */
void app_logs_print(FILE *out, const json_t *entry);

/*
 * Following: a stream never repeats itself, but a new one (after a reconnection) starts with recent lines
 * again. Of those, entries older than the newest timestamp printed are repeats, and so are those at that
 * very timestamp already printed (kept in `seen`); the first other one ends the replay.
 */
struct app_logs_follow {
        FILE *out;
        bool json;        /* print entries as compact JSON lines instead of app_logs_print */
        char last[64];    /* newest timestamp printed */
        struct strv seen; /* "source\tindex\ttype\tmessage" printed at `last` */
        char *buf;        /* partial line (APP_LOGS_LINE_MAX bytes once used) */
        size_t len;
        bool overlong; /* dropping the rest of a too-long line */
        bool replay;   /* after a reconnection: lines already printed may come again */
        long printed;  /* entries printed so far */
        /* Called at each keep-alive (a blank line, after some idle seconds); < 0 ends the stream with it. */
        int (*idle)(void *userdata);
        void *idle_userdata;
};

/* A new stream begins: drop any partial line; reconnected: its replay of recent lines is filtered. */
void app_logs_follow_begin(struct app_logs_follow *f, bool reconnected);
/*
 * Stream data (an http_stream_fn): whole lines are parsed and printed; blank lines (keep-alives) call
 * f->idle. Returns 0, or idle's negative value.
 */
int app_logs_follow_data(const char *data, size_t len, void *userdata);
/* Free what f holds. */
void app_logs_follow_done(struct app_logs_follow *f);
