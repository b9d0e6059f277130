/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cell/health.h"
#include "lib/macro.h"

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd pfd = { .fd = fd, .events = events };
                int n = poll(&pfd, 1, (int)left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n > 0)
                        return 0;
        }
}

/* A connected non-blocking socket to ip:port (caller closes), or a negative errno. */
static int connect_deadline(const char *ip, uint16_t port, int64_t deadline, struct berr **err)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
        if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
                return berr_set(err, -EINVAL, "invalid address %s", ip);
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return berr_set_errno(err, -errno, "socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                if (errno != EINPROGRESS)
                        return berr_set_errno(err, -errno, "connect to %s:%u", ip, port);
                int r = wait_fd(fd, POLLOUT, deadline);
                if (r < 0)
                        return berr_set(err, r, "connect to %s:%u: %s", ip, port, strerror(-r));
                int soerr = 0;
                socklen_t len = sizeof(soerr);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
                        return berr_set_errno(err, -errno, "getsockopt");
                if (soerr)
                        return berr_set(err, -soerr, "connect to %s:%u: %s", ip, port, strerror(soerr));
        }
        int ret = fd;
        fd = -1;
        return ret;
}

int health_check_port(const char *ip, uint16_t port, unsigned timeout_ms, struct berr **err)
{
        int fd = connect_deadline(ip, port, now_ms() + timeout_ms, err);
        if (fd < 0)
                return fd;
        close(fd);
        return 0;
}

int health_check_http(const char *ip, uint16_t port, const char *endpoint, unsigned timeout_ms,
                      struct berr **err)
{
        int64_t deadline = now_ms() + timeout_ms;
        if (!endpoint || endpoint[0] != '/' || strpbrk(endpoint, " \r\n"))
                return berr_set(err, -EINVAL, "invalid endpoint");
        _cleanup_close_ int fd = connect_deadline(ip, port, deadline, err);
        if (fd < 0)
                return fd;
        char req[2048];
        int n = snprintf(
            req, sizeof(req),
            "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUser-Agent: berth-health\r\nConnection: close\r\n\r\n",
            endpoint, ip, port);
        if (n < 0 || (size_t)n >= sizeof(req))
                return berr_set(err, -EINVAL, "endpoint too long");
        size_t off = 0;
        while (off < (size_t)n) {
                ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
                if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                        int r = wait_fd(fd, POLLOUT, deadline);
                        if (r < 0)
                                return berr_set(err, r, "http check on port %u: timed out", port);
                        continue;
                }
                if (w < 0)
                        return berr_set_errno(err, -errno, "http check on port %u: send", port);
                off += (size_t)w;
        }
        char buf[64];
        size_t got = 0;
        while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
                ssize_t rd = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
                if (rd < 0 && (errno == EAGAIN || errno == EINTR)) {
                        int r = wait_fd(fd, POLLIN, deadline);
                        if (r < 0)
                                return berr_set(err, r, "http check on port %u: timed out", port);
                        continue;
                }
                if (rd < 0)
                        return berr_set_errno(err, -errno, "http check on port %u: recv", port);
                if (rd == 0)
                        break;
                got += (size_t)rd;
        }
        buf[got] = '\0';
        int status = 0;
        if (sscanf(buf, "HTTP/1.%*1[01] %3d", &status) != 1)
                return berr_set(err, -EPROTO, "http check on port %u: no HTTP answer", port);
        if (status != 200)
                return berr_set(err, -EIO, "http check on port %u: status %d", port, status);
        return 0;
}
