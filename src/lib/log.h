/* SPDX-License-Identifier: Apache-2.0 */
/* Leveled diagnostics to stderr (daemons) or nowhere (CLI default). Never stdout. */
#pragma once

#include "lib/macro.h"

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Threshold; messages above it are dropped. Initialised from $BERTH_LOG_LEVEL by log_init(). */
void log_init(enum log_level default_level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) _printf_(2, 3);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
