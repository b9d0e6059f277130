/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's parsers of untrusted input: the route table the controller sends (route_table_from_json,
 * also checked by lookups and picks on what it built) and the cookies clients and apps send (Cookie
 * values, Set-Cookie attributes and the __VCAP_ID__ cookie built from them). The first byte picks one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json.h"
#include "router/router_internal.h"

static void fuzz_table(const char *s, size_t n)
{
        json_t *doc = json_loadb(s, n, JSON_DECODE_ANY, NULL);
        if (!doc)
                return;
        struct route_table *t = NULL;
        struct berr *e = NULL;
        if (route_table_from_json(doc, NULL, &t, &e) == 0) {
                struct route_table *t2 = NULL;
                if (route_table_from_json(doc, t, &t2, NULL) == 0) /* stats carried over */
                        route_table_unref(t2);
                for (size_t i = 0; i < t->n_routes; i++) {
                        struct rt_route *r = &t->routes[i];
                        const struct rt_route *f =
                            route_table_lookup(t, r->host, strlen(r->host), r->path, r->path_len);
                        if (!f || strcmp(f->host, r->host) != 0)
                                abort();
                        int k = route_pick(r, (i & 1) ? RT_LEAST_CONN : RT_ROUND_ROBIN, 2,
                                           r->n_eps ? r->eps[0].instance_guid : NULL, 0, 0);
                        if (k >= (int)r->n_eps || (r->n_eps > 0 && k < 0) || (r->n_eps == 0 && k >= 0))
                                abort();
                }
                route_table_unref(t);
        }
        berr_free(e);
        json_decref(doc);
}

static void fuzz_cookie(const char *s, size_t n)
{
        char v[64];
        cookie_value(s, n, "__VCAP_ID__", v, sizeof(v));
        if (strlen(v) >= sizeof(v))
                abort();
        (void)set_cookie_is(s, n, "JSESSIONID");
        struct cookie_attrs a;
        set_cookie_attrs(s, n, &a);
        char out[512];
        int k = vcap_cookie_format(out, sizeof(out), v[0] ? v : "g", "/p", &a);
        if (k >= 0 && (strchr(out, '\r') || strchr(out, '\n') || (size_t)k != strlen(out)))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        if (data[0] & 1)
                fuzz_table((const char *)data + 1, size - 1);
        else
                fuzz_cookie((const char *)data + 1, size - 1);
        return 0;
}
