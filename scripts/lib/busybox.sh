# SPDX-License-Identifier: Apache-2.0
# A minimal root filesystem from Debian's busybox-static, for the images scripts/demo.sh and bench/*.sh build
# without Docker (sourced; bash).
#
#   busybox_rootfs DIR   create bin/ (busybox and a symlink per applet), etc/, tmp/ (1777) and root/ (0700)
#                        in DIR; the caller adds /etc/passwd, /etc/group and its own files.
# /bin/busybox must be the static one: a dynamically linked busybox would not run in the image.

busybox_rootfs() {
        local r=$1 applet
        mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root"
        chmod 1777 "$r/tmp"
        chmod 0700 "$r/root"
        install -m 0755 /bin/busybox "$r/bin/busybox"
        for applet in $(/bin/busybox --list); do
                [ "$applet" = busybox ] || ln -sf busybox "$r/bin/$applet"
        done
}
