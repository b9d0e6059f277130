/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_platform(void);
int image_stub_platform(void)
{
        return 0;
}
