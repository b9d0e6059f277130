/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_reference(void);
int image_stub_reference(void)
{
        return 0;
}
