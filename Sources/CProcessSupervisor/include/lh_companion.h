/*
 * Companion-process primitives: a detached child started from an executable with one
 * socket inherited as fd 3, and pidfds to learn for certain that a process has exited.
 * Nothing here knows what the companion does.
 */
#ifndef LH_COMPANION_H
#define LH_COMPANION_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The fd number the companion finds its end of the socket on. */
#define LH_COMPANION_FD 3

/**
 * A connected AF_UNIX stream socket pair, both ends close-on-exec. 0 or errno.
 */
int lh_companion_socketpair(int fds[2]);

/**
 * Starts `path` (argv/envp as given) in a new session of its own, so signals aimed at the
 * caller's process group (a test harness's killpg, Ctrl-C) do not reach it, with `child_fd`
 * as its fd LH_COMPANION_FD, an empty signal mask and default signal dispositions. Every
 * other close-on-exec fd of the caller stays behind. Returns 0 and the pid, or an errno.
 */
int lh_spawn_companion(const char *path, char *const argv[], char *const envp[], int child_fd, int32_t *pid_out);

/**
 * A pidfd for `pid` (close-on-exec): it becomes readable once the process has exited, and
 * it never refers to a later process that reuses the pid. Returns the fd, or -1 with errno
 * (ENOSYS before Linux 5.3, ESRCH if no such process).
 */
int lh_pidfd_open(int32_t pid);

/** Blocking waitpid for a child (retries EINTR): its raw status, or -1. */
int lh_companion_reap(int32_t pid);

#ifdef __cplusplus
}
#endif

#endif
