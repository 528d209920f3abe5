/* Board layer for the workstation build (POSIX): the serial link is stdin/stdout (the launcher
 * connects them to a pty), or the tty path given as argv[1]; the counter is CLOCK_MONOTONIC ns. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mdt_board.h"

static int fd_in = 0;
static int fd_out = 1;
/* Bytes already read from the fd but not yet handed out: one read() per burst, not per byte. */
static unsigned char rx_buf[256];
static ssize_t rx_len;
static ssize_t rx_pos;

static void make_raw(int fd)
{
    struct termios t;
    if (!isatty(fd) || tcgetattr(fd, &t) != 0) {
        return;
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    (void)tcsetattr(fd, TCSANOW, &t);
}

void mdt_board_init(int argc, char **argv)
{
    if (argc > 1) {
        int fd = open(argv[1], O_RDWR | O_NOCTTY);
        if (fd < 0) {
            fprintf(stderr, "cannot open %s\n", argv[1]);
            exit(2);
        }
        fd_in = fd_out = fd;
    }
    make_raw(fd_in);
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    struct pollfd pfd;
    ssize_t n;
    int r;
    if (rx_pos < rx_len) {
        return rx_buf[rx_pos++];
    }
    pfd.fd = fd_in;
    pfd.events = POLLIN;
    pfd.revents = 0;
    r = poll(&pfd, 1, (int)timeout_ms);
    if (r < 0) {
        return errno == EINTR ? MDT_READ_TIMEOUT : MDT_READ_CLOSED;
    }
    if (r == 0) {
        return MDT_READ_TIMEOUT;
    }
    n = read(fd_in, rx_buf, sizeof(rx_buf));
    if (n > 0) {
        rx_len = n;
        rx_pos = 1;
        return rx_buf[0];
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return MDT_READ_TIMEOUT;
    }
    return MDT_READ_CLOSED; /* EOF, or EIO once the other end of the pty is closed */
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    while (length > 0) {
        ssize_t n = write(fd_out, data, length);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            exit(3); /* the host went away: nothing left to answer */
        }
        data += n;
        length -= (uint32_t)n;
    }
}

uint64_t mdt_board_counter(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void mdt_board_counter_align(void)
{
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_NS;
}

uint32_t mdt_board_clock_hz(void)
{
    return 1000000000u;
}

int mdt_board_host_open(const char *path, uint32_t path_len, uint32_t *file_len)
{
    struct stat st;
    int fd;
    (void)path_len;
    fd = open(path, O_RDONLY | O_NOCTTY);
    if (fd < 0) {
        return MDT_HOST_NO_FILE;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)0xFFFFFFFFu) {
        (void)close(fd);
        return MDT_HOST_NO_FILE;
    }
    *file_len = (uint32_t)st.st_size;
    return fd;
}

int mdt_board_host_read(int handle, uint32_t offset, uint8_t *buf, uint32_t n)
{
    while (n > 0) {
        ssize_t got = pread(handle, buf, n, (off_t)offset);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return MDT_HOST_NO_FILE; /* an error, or the file ends (it shrank) */
        }
        buf += got;
        offset += (uint32_t)got;
        n -= (uint32_t)got;
    }
    return 0;
}

void mdt_board_host_close(int handle)
{
    if (handle >= 0) {
        (void)close(handle);
    }
}

void mdt_board_exit(int code)
{
    /* Closing the pty master would flush the answer still unread on the host's side: wait (up
     * to 1 s) for the host to read it and hang up first. */
    int i;
    for (i = 0; i < 10; i++) {
        if (mdt_board_read_byte(100u) == MDT_READ_CLOSED) {
            break;
        }
    }
    exit(code);
}
