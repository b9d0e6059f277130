/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placeholders for the apps half of the controller (apps.c, staging.c, routes.c, sched.c, logs.c) while a
 * file of it is not in the tree yet, so that the controller library and build/berth-image keep linking.
 * meson.build compiles this file with -DCTL_STUB_<FILE> for each missing file only; it goes away once all
 * five exist.
 */
#include "controller/ctl.h"

#ifdef CTL_STUB_APPS
const char db_schema_apps[] = "";
const struct api_route api_routes_apps[] = { { NULL } };
void apps_space_deleted(struct ctl *c, const char *space_guid)
{
        (void)c, (void)space_guid;
}
#endif

#ifdef CTL_STUB_STAGING
const struct api_route api_routes_staging[] = { { NULL } };
#endif

#ifdef CTL_STUB_ROUTES
const struct api_route api_routes_routes[] = { { NULL } };
void routes_changed(struct ctl *c)
{
        pthread_mutex_lock(&c->rt_lock);
        c->rt_version++;
        pthread_cond_broadcast(&c->rt_cond);
        pthread_mutex_unlock(&c->rt_lock);
}
#endif

#ifdef CTL_STUB_SCHED
const struct api_route api_routes_sched[] = { { NULL } };
int sched_start(struct ctl *c, struct berr **err)
{
        (void)c, (void)err;
        return 0;
}
void sched_stop(struct ctl *c)
{
        (void)c;
}
void sched_kick(struct ctl *c)
{
        (void)c;
}
#endif

#ifdef CTL_STUB_LOGS
const struct api_route api_routes_logs[] = { { NULL } };
#endif
