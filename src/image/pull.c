/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_pull(void);
int image_stub_pull(void)
{
        return 0;
}
