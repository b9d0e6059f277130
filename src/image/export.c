/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_export(void);
int image_stub_export(void)
{
        return 0;
}
