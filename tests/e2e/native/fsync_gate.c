/* An LD_PRELOAD shim for tests/e2e/test_durability.py: every fsync or fdatasync of a
 * SQLite WAL file ("*-wal") is noted in $MIASMA_FSYNC_LOG and then held while the
 * file $MIASMA_FSYNC_GATE exists. A reply that waits for the WAL to be on disk
 * cannot come while the gate is closed; one that does not wait comes anyway. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_wal(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 4) return 0;
    path[n] = 0;
    return strcmp(path + n - 4, "-wal") == 0;
}

static void note_and_hold(int fd) {
    const char *gate = getenv("MIASMA_FSYNC_GATE");
    const char *log = getenv("MIASMA_FSYNC_LOG");
    if (!gate || !log || !is_wal(fd)) return;
    int out = open(log, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (out >= 0) {
        ssize_t written = write(out, "wal\n", 4);
        (void)written;
        close(out);
    }
    while (access(gate, F_OK) == 0) usleep(10000);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    note_and_hold(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    note_and_hold(fd);
    return real(fd);
}
