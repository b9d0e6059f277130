/* SPDX-License-Identifier: Apache-2.0 */
/* Pull progress: one bar per layer redrawn in place on a TTY; plain event lines otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/store.h"

#define BAR_WIDTH 30

struct progress_ui {
        FILE *out;
        bool quiet;
        bool tty;
        size_t n_layers;
        size_t drawn; /* lines drawn by the last redraw */
        struct layer_line {
                char digest[20];
                const char *state;
                uint64_t done, total;
        } * lines;
        struct timespec last;
};

struct progress_ui *progress_ui_new_on(FILE *out, bool quiet)
{
        struct progress_ui *ui = xcalloc(1, sizeof(*ui));
        ui->out = out;
        ui->quiet = quiet;
        ui->tty = isatty(fileno(out)) && getenv("TERM") && strcmp(getenv("TERM"), "dumb") != 0;
        return ui;
}

struct progress_ui *progress_ui_new(bool quiet)
{
        return progress_ui_new_on(stdout, quiet);
}

void progress_ui_free(struct progress_ui *ui)
{
        if (!ui)
                return;
        free(ui->lines);
        free(ui);
}

static void short_digest(const char *d, char out[20])
{
        const char *c = d ? strchr(d, ':') : NULL;
        snprintf(out, 20, "%.12s", c ? c + 1 : d ? d : "");
}

static void redraw(struct progress_ui *ui, bool force)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - ui->last.tv_sec) * 1000 + (now.tv_nsec - ui->last.tv_nsec) / 1000000;
        if (!force && ms < 100)
                return;
        ui->last = now;
        if (ui->drawn)
                fprintf(ui->out, "\033[%zuA", ui->drawn);
        for (size_t i = 0; i < ui->n_layers; i++) {
                struct layer_line *l = &ui->lines[i];
                char bar[BAR_WIDTH + 1];
                size_t fill = l->total ? (size_t)((double)l->done / (double)l->total * BAR_WIDTH) : 0;
                fill = MIN(fill, (size_t)BAR_WIDTH);
                memset(bar, '=', fill);
                memset(bar + fill, ' ', BAR_WIDTH - fill);
                if (fill < BAR_WIDTH && fill > 0)
                        bar[fill - 1] = '>';
                bar[BAR_WIDTH] = '\0';
                fprintf(ui->out, "\033[2K%-12s %-12s [%s] %6.1f/%.1f MB\n", l->digest,
                        l->state ? l->state : "waiting", bar, (double)l->done / 1e6, (double)l->total / 1e6);
        }
        ui->drawn = ui->n_layers;
        fflush(ui->out);
}

void progress_ui_event(void *userdata, const struct pull_progress *p)
{
        struct progress_ui *ui = userdata;
        char d[20];
        if (ui->quiet)
                return;
        if (p->event == PULL_RESOLVED) {
                ui->n_layers = p->n_layers;
                ui->lines = xcalloc(p->n_layers ? p->n_layers : 1, sizeof(*ui->lines));
                fprintf(ui->out, "Resolved %s (%zu layer%s)\n", p->digest, p->n_layers,
                        p->n_layers == 1 ? "" : "s");
                fflush(ui->out);
                return;
        }
        if (p->event == PULL_DONE) {
                if (ui->tty)
                        redraw(ui, true);
                return;
        }
        if (p->layer >= ui->n_layers)
                return;
        struct layer_line *l = &ui->lines[p->layer];
        short_digest(p->digest, l->digest);
        short_digest(p->digest, d);
        switch (p->event) {
        case PULL_LAYER_CACHED:
                l->state = "cached";
                l->done = l->total = p->total;
                if (!ui->tty)
                        fprintf(ui->out, "%s: already present\n", d);
                break;
        case PULL_LAYER_WAITING:
                l->state = "waiting";
                if (!ui->tty)
                        fprintf(ui->out, "%s: waiting for another pull of this layer\n", d);
                break;
        case PULL_LAYER_START:
                l->state = "pulling";
                l->total = p->total;
                if (!ui->tty)
                        fprintf(ui->out, "%s: pulling %.1f MB\n", d, (double)p->total / 1e6);
                break;
        case PULL_LAYER_PROGRESS:
                l->done = p->done;
                break;
        case PULL_LAYER_DONE:
                l->state = "done";
                l->done = l->total;
                if (!ui->tty)
                        fprintf(ui->out, "%s: done\n", d);
                break;
        default:
                break;
        }
        if (ui->tty)
                redraw(ui, p->event != PULL_LAYER_PROGRESS);
        else
                fflush(ui->out);
}
