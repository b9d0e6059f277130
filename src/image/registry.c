/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_registry(void);
int image_stub_registry(void)
{
        return 0;
}
