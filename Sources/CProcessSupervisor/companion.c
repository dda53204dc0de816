/*
 * Why posix_spawn and not fork: the caller is a multithreaded Swift process; posix_spawn
 * (vfork-like in glibc) runs no user code between fork and exec, and POSIX_SPAWN_SETSID
 * puts the child in its own session in the same step.
 */
#if defined(__linux__)
#define _GNU_SOURCE
#endif
#include "lh_companion.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

int lh_companion_socketpair(int fds[2]) {
#if defined(SOCK_CLOEXEC)
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return errno;
#else
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return errno;
    (void)fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
    return 0;
}

int lh_spawn_companion(const char *path, char *const argv[], char *const envp[], int child_fd, int32_t *pid_out) {
    /* dup2(fd, fd) would keep close-on-exec set: move the fd off the target number first. */
    int source = fcntl(child_fd, F_DUPFD_CLOEXEC, LH_COMPANION_FD + 1);
    if (source < 0) return errno;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) {
        close(source);
        return rc;
    }
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        close(source);
        return rc;
    }
    rc = posix_spawn_file_actions_adddup2(&actions, source, LH_COMPANION_FD);
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
#if defined(POSIX_SPAWN_SETSID)
    flags |= POSIX_SPAWN_SETSID;
#else
    flags |= POSIX_SPAWN_SETPGROUP;
#endif
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, flags);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
    pid_t pid = 0;
    if (rc == 0) rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    close(source);
    if (rc == 0) *pid_out = (int32_t)pid;
    return rc;
}

int lh_pidfd_open(int32_t pid) {
#if defined(__linux__) && defined(SYS_pidfd_open)
    /* pidfds are close-on-exec by definition. */
    return (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int lh_companion_reap(int32_t pid) {
    int status = 0;
    for (;;) {
        pid_t r = waitpid((pid_t)pid, &status, 0);
        if (r == (pid_t)pid) return status;
        if (r < 0 && errno == EINTR) continue;
        return -1;
    }
}
