/* SPDX-License-Identifier: Apache-2.0 */
#include "cell/process.h"

void process_spec_free(struct process_spec *p)
{
        (void)p;
}
