/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the controller's unit tests: a store on a temporary file, and an in-memory stand-in for the
 * HTTP server's request/response (the tests link these instead of lib/http_server.c).
 */
#pragma once

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sodium.h>

#include "controller/ctl.h"
#include "lib/json.h"

struct http_response {
        int status;
        json_t *json;
        char *body;
        char headers[1024];
};

struct test_req {
        struct http_request http;
        struct http_head head;
        const char *auth; /* Authorization value or NULL */
        const char *ctype;
};

const char *http_request_header(const struct http_request *r, const char *name)
{
        const struct test_req *t = (const struct test_req *)r;
        if (strcasecmp(name, "Authorization") == 0)
                return t->auth;
        if (strcasecmp(name, "Content-Type") == 0)
                return t->ctype;
        return NULL;
}

void http_response_header(struct http_response *resp, const char *name, const char *value)
{
        size_t n = strlen(resp->headers);
        snprintf(resp->headers + n, sizeof(resp->headers) - n, "%s: %s\n", name, value);
}

void http_response_body(struct http_response *resp, int status, const char *content_type, const void *body,
                        size_t len)
{
        (void)content_type;
        resp->status = status;
        free(resp->body);
        resp->body = strndup(body, len);
}

void http_response_json(struct http_response *resp, int status, json_t *body)
{
        resp->status = status;
        json_decref(resp->json);
        resp->json = body;
}

static inline void test_resp_reset(struct http_response *resp)
{
        json_decref(resp->json);
        free(resp->body);
        memset(resp, 0, sizeof(*resp));
}

/* A controller with a fresh store in a temp dir; path receives the directory. */
static inline void test_ctl_open(struct ctl *c, char dir[static 64])
{
        memset(c, 0, sizeof(*c));
        snprintf(dir, 64, "/tmp/berth-ctltest-XXXXXX");
        if (!mkdtemp(dir))
                abort();
        char *db = xasprintf("%s/berth.db", dir);
        struct berr *e = NULL;
        if (sodium_init() < 0 || db_open(c, db, &e) < 0) {
                fprintf(stderr, "db_open: %s\n", e ? berr_msg(e) : "?");
                abort();
        }
        free(db);
        c->external_url = xstrdup("http://api.test");
        c->domain = xstrdup("apps.test");
        c->internal_token = xstrdup("internal-secret");
        c->token_ttl_s = 3600;
        pthread_mutex_init(&c->rt_lock, NULL);
        pthread_cond_init(&c->rt_cond, NULL);
}

static inline void test_ctl_close(struct ctl *c, const char *dir)
{
        db_close(c);
        free(c->external_url);
        free(c->domain);
        free(c->internal_token);
        char *cmd = xasprintf("rm -rf '%s'", dir);
        if (system(cmd) != 0)
                abort();
        free(cmd);
}
