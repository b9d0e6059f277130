/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholders until the platform commands land (issue 4). */
#include <errno.h>
#include <string.h>

#include "cell/agent.h"
#include "cli/cli.h"
#include "controller/controller.h"
#include "router/router.h"

int cmd_platform(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        (void)g, (void)argc;
        berr_set(err, -ENOSYS, "%s: not built yet", argv[0]);
        return CLI_EXIT_FAILURE;
}

int cmd_daemon(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (strcmp(argv[0], "controller") == 0)
                return controller_main(g->data_dir, g->config, argc, argv, err);
        if (strcmp(argv[0], "router") == 0)
                return router_main(g->config, argc, argv, err);
        return cell_agent_main(g->data_dir, g->config_explicit ? g->config_path : NULL, g->config, argc, argv,
                               err);
}
