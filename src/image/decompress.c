/* SPDX-License-Identifier: Apache-2.0 */
#include "image/store.h"
int image_stub_decompress(void);
int image_stub_decompress(void)
{
        return 0;
}
