/*
 * Implementation notes (why it is written this way):
 *
 * - The caller (the daemon) is multithreaded, so between fork() and _exit() the
 *   supervisor only makes async-signal-safe calls: no malloc, no stdio, no locks. Every
 *   allocation (argv, envp, the fd list) is prepared by the caller before fork.
 * - The supervisor never execs, so close-on-exec does not clean its inherited fds. It
 *   closes every fd it does not own explicitly: otherwise supervisor A would keep the
 *   caller's feed socket of supervisor B open, and B would never see EOF when the
 *   caller dies.
 * - The supervisor sits in its own process group (not the caller's, not the job's):
 *   killpg of the job group cannot hit it, and terminal signals aimed at the caller's
 *   foreground group (Ctrl-C) cannot kill it before it has stopped the job cleanly. It
 *   also ignores SIGINT/SIGHUP/SIGQUIT and job-control stops from the terminal; its
 *   lifetime is driven by the feed. SIGTERM sent to the supervisor itself (systemd stop,
 *   an operator) is honoured as a graceful terminate request. PR_SET_PDEATHSIG is not
 *   used: the supervisor must outlive the caller to kill the job.
 * - Deadlines on the feed are absolute times on a clock shared by both processes
 *   (CLOCK_BOOTTIME), so a message read late (supervisor descheduled) cannot stretch a
 *   deadline; a relative "now + N" would.
 * - The feed is a socketpair so the caller can write with MSG_NOSIGNAL: a dead
 *   supervisor must not SIGPIPE the daemon. The caller's end is non-blocking: a frozen
 *   supervisor makes an extension fail (EAGAIN), which only makes the deadline earlier.
 */
#if defined(__linux__)
#define _GNU_SOURCE
#endif
#include "lh_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

/* Feed records (caller -> supervisor), 16 bytes: atomic on a stream socket of this size. */
typedef struct {
    int32_t op;
    int32_t reserved;
    int64_t value;
} lh_feed_msg_t;

enum { LH_FEED_DEADLINE = 1, LH_FEED_TERMINATE = 2 };

#define LH_NS_PER_MS 1000000LL
/* Longest single poll() sleep: bounds how late a suspend/resume or a missed wakeup is noticed. */
#define LH_MAX_POLL_MS 250
/* Poll period while waiting for a SIGTERMed group to disappear (members are not our children). */
#define LH_GROUP_POLL_MS 20

int64_t lh_supervisor_clock_ns(void) {
    struct timespec ts;
#if defined(CLOCK_BOOTTIME)
    clock_gettime(CLOCK_BOOTTIME, &ts);
#elif defined(__APPLE__)
    clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- helpers usable in the supervisor and the job child (async-signal-safe only) ---- */

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void send_status(int fd, int32_t kind, int32_t a, int32_t b, int32_t c) {
    lh_status_msg_t m = {kind, a, b, c};
    (void)write_all(fd, &m, sizeof m);
}

/* Self-pipe woken by SIGCHLD and SIGTERM handlers, so poll() sees signals without races. */
static volatile int g_wake_fd = -1;
static volatile sig_atomic_t g_term_requested = 0;

static void on_wake_signal(int sig) {
    int saved = errno;
    if (sig == SIGTERM) g_term_requested = 1;
    if (g_wake_fd >= 0) {
        char b = 0;
        (void)write(g_wake_fd, &b, 1);
    }
    errno = saved;
}

static void set_disposition(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = (handler == on_wake_signal) ? SA_RESTART : 0;
    (void)sigaction(sig, &sa, NULL);
}

/* Resets every catchable signal to SIG_DFL: SIG_IGN survives exec and must not leak into jobs. */
static void reset_all_dispositions(void) {
#if defined(NSIG)
    const int nsig = NSIG;
#else
    const int nsig = 65;
#endif
    for (int s = 1; s < nsig; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        set_disposition(s, SIG_DFL);
    }
}

static int fd_is_kept(int fd, const int *keep, int nkeep) {
    for (int i = 0; i < nkeep; i++)
        if (keep[i] == fd) return 1;
    return 0;
}

/* Closes every fd >= 3 not in keep[] (close_range where available, else a bounded loop). */
static void close_all_except(const int *keep, int nkeep, int max_fd) {
#if defined(__linux__) && defined(SYS_close_range)
    /* Walk the gaps between kept fds in ascending order without sorting (nkeep is tiny). */
    int lo = 3;
    for (;;) {
        int next = -1;
        for (int i = 0; i < nkeep; i++)
            if (keep[i] >= lo && (next < 0 || keep[i] < next)) next = keep[i];
        unsigned int hi = next < 0 ? ~0U : (unsigned int)next - 1;
        if (next < 0 || next > lo) {
            if (syscall(SYS_close_range, (unsigned int)lo, hi, 0) != 0) goto fallback;
        }
        if (next < 0) return;
        lo = next + 1;
    }
fallback:
#endif
    for (int fd = 3; fd < max_fd; fd++)
        if (!fd_is_kept(fd, keep, nkeep)) (void)close(fd);
}

static int set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

static int set_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Everything the supervisor needs, prepared by the caller before fork. */
typedef struct {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int feed_fd;     /* supervisor's end of the feed socket */
    int status_fd;   /* write end of the status pipe */
    int out_fd;      /* write end of the job's stdout pipe */
    int err_fd;      /* write end of the job's stderr pipe */
    int64_t hard_deadline_ns;
    int64_t grace_ns;
    int max_fd;
} lh_child_args_t;

/* Moves fd to >= 3 (close-on-exec) so that dup2 onto 0/1/2 cannot clobber it. */
static int lift_fd(int fd) {
    if (fd >= 3) return fd;
    int nfd = fcntl(fd, F_DUPFD, 3);
    if (nfd >= 0) set_cloexec(nfd);
    return nfd;
}

static void job_child(const lh_child_args_t *a, int devnull, int errpipe_w) __attribute__((noreturn));
static void job_child(const lh_child_args_t *a, int devnull, int errpipe_w) {
    /* Own process group: the supervisor signals the whole group, grandchildren included. */
    (void)setpgid(0, 0);
    if (dup2(devnull, 0) < 0 || dup2(a->out_fd, 1) < 0 || dup2(a->err_fd, 2) < 0) {
        int32_t rec[2] = {LH_STAGE_EXEC, errno};
        (void)write_all(errpipe_w, rec, sizeof rec);
        _exit(127);
    }
    if (a->cwd != NULL && chdir(a->cwd) != 0) {
        int32_t rec[2] = {LH_STAGE_CHDIR, errno};
        (void)write_all(errpipe_w, rec, sizeof rec);
        _exit(127);
    }
    reset_all_dispositions();
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    execve(a->path, a->argv, a->envp);
    int32_t rec[2] = {LH_STAGE_EXEC, errno};
    (void)write_all(errpipe_w, rec, sizeof rec);
    _exit(127);
}

/* Non-blocking reap of every exited child: the job leader (status recorded once) and, as a
 * subreaper, orphaned grandchildren, whose zombies would otherwise keep the group
 * "alive" for killpg(pgid, 0) until init got round to reaping them. */
static void try_reap(pid_t job, int *reaped, int *status) {
    for (;;) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        if (r == job && !*reaped) {
            *reaped = 1;
            *status = st;
        }
    }
}

static int group_gone(pid_t pgid) { return killpg(pgid, 0) != 0 && errno == ESRCH; }

static void supervisor_main(lh_child_args_t *a) __attribute__((noreturn));
static void supervisor_main(lh_child_args_t *a) {
    /* Signals arrive blocked (the caller blocked them around fork); reset before unblocking
     * so none of the caller's handlers can ever run in this process. */
    reset_all_dispositions();
    (void)setpgid(0, 0);
#if defined(__linux__) && defined(PR_SET_CHILD_SUBREAPER)
    /* Orphaned members of the job's group get reparented here, so we can reap them. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif

    a->feed_fd = lift_fd(a->feed_fd);
    a->status_fd = lift_fd(a->status_fd);
    a->out_fd = lift_fd(a->out_fd);
    a->err_fd = lift_fd(a->err_fd);
    if (a->feed_fd < 0 || a->status_fd < 0 || a->out_fd < 0 || a->err_fd < 0) _exit(120);

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        send_status(a->status_fd, LH_STATUS_SPAWN_FAILED, LH_STAGE_SUPERVISOR_SETUP, errno, 0);
        _exit(121);
    }
    devnull = lift_fd(devnull);
    /* The supervisor must not hold the caller's stdio (e.g. a pipe someone waits on). */
    (void)dup2(devnull, 0);
    (void)dup2(devnull, 1);
    (void)dup2(devnull, 2);

    int keep[5] = {a->feed_fd, a->status_fd, a->out_fd, a->err_fd, devnull};
    close_all_except(keep, 5, a->max_fd);

    int wake[2], errpipe[2];
    if (pipe(wake) != 0 || pipe(errpipe) != 0) {
        send_status(a->status_fd, LH_STATUS_SPAWN_FAILED, LH_STAGE_SUPERVISOR_SETUP, errno, 0);
        _exit(122);
    }
    set_cloexec(wake[0]);
    set_cloexec(wake[1]);
    set_nonblock(wake[0]);
    set_nonblock(wake[1]);
    set_cloexec(errpipe[0]);
    set_cloexec(errpipe[1]);
    g_wake_fd = wake[1];

    set_disposition(SIGPIPE, SIG_IGN);  /* status writes after the caller died must not kill us */
    set_disposition(SIGINT, SIG_IGN);
    set_disposition(SIGHUP, SIG_IGN);
    set_disposition(SIGQUIT, SIG_IGN);
    set_disposition(SIGTSTP, SIG_IGN);
    set_disposition(SIGTTIN, SIG_IGN);
    set_disposition(SIGTTOU, SIG_IGN);
    set_disposition(SIGCHLD, on_wake_signal);
    set_disposition(SIGTERM, on_wake_signal);

    /* Still fully blocked: the job child starts with no handler able to run. */
    pid_t job = fork();
    if (job < 0) {
        send_status(a->status_fd, LH_STATUS_SPAWN_FAILED, LH_STAGE_FORK_JOB, errno, 0);
        _exit(123);
    }
    if (job == 0) {
        (void)close(errpipe[0]);
        job_child(a, devnull, errpipe[1]);
    }
    (void)setpgid(job, job); /* also from this side: no window where killpg(job) misses it */
    (void)close(errpipe[1]);
    (void)close(a->out_fd);
    (void)close(a->err_fd);
    (void)close(devnull);

    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);

    /* Exec handshake: EOF means execve succeeded (errpipe is close-on-exec). */
    int32_t rec[2];
    size_t got = 0;
    while (got < sizeof rec) {
        ssize_t n = read(errpipe[0], (char *)rec + got, sizeof rec - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    (void)close(errpipe[0]);
    if (got == sizeof rec) {
        int st;
        while (waitpid(job, &st, 0) < 0 && errno == EINTR) {}
        send_status(a->status_fd, LH_STATUS_SPAWN_FAILED, rec[0], rec[1], 0);
        _exit(0);
    }
    send_status(a->status_fd, LH_STATUS_STARTED, (int32_t)job, 0, 0);

    int64_t hard = a->hard_deadline_ns;
    const int64_t grace = a->grace_ns;
    int terminating = 0, killed = 0, escalated = 0, reaped = 0, job_status = 0;
    int32_t reason = LH_END_OWN_EXIT;
    int64_t kill_at = 0;
    int feed = a->feed_fd;
    unsigned char fbuf[sizeof(lh_feed_msg_t) * 32];
    size_t fbuf_len = 0;

#define START_TERMINATE(why)                                     \
    do {                                                         \
        if (!terminating) {                                      \
            terminating = 1;                                     \
            reason = (why);                                      \
            int64_t t = lh_supervisor_clock_ns();                \
            kill_at = t + grace < hard ? t + grace : hard;       \
            (void)killpg(job, SIGTERM);                          \
            (void)killpg(job, SIGCONT); /* a stopped job must be able to handle SIGTERM */ \
        }                                                        \
    } while (0)

    for (;;) {
        try_reap(job, &reaped, &job_status);
        if (g_term_requested) START_TERMINATE(LH_END_TERMINATED);
        int64_t now = lh_supervisor_clock_ns();
        if (!terminating) {
            if (reaped) break;
            if (now >= hard - grace) START_TERMINATE(LH_END_DEADLINE);
        }
        if (terminating) {
            if (reaped && group_gone(job)) break;
            if (!killed && now >= kill_at) {
                try_reap(job, &reaped, &job_status);
                if (!reaped || !group_gone(job)) {
                    (void)killpg(job, SIGKILL);
                    escalated = 1;
                }
                killed = 1;
            }
            /* After SIGKILL nothing in the group can run again; only the leader is ours to reap. */
            if (killed && reaped) break;
            if (killed && !reaped) {
                int st;
                pid_t r;
                do { r = waitpid(job, &st, 0); } while (r < 0 && errno == EINTR);
                if (r == job) { reaped = 1; job_status = st; }
                break;
            }
        }

        int64_t next = terminating ? kill_at : hard - grace;
        int64_t wait_ms = (next - now + LH_NS_PER_MS - 1) / LH_NS_PER_MS;
        if (wait_ms < 0) wait_ms = 0;
        int cap = (terminating && reaped) ? LH_GROUP_POLL_MS : LH_MAX_POLL_MS;
        if (wait_ms > cap) wait_ms = cap;

        struct pollfd p[2];
        int np = 0;
        p[np].fd = wake[0]; p[np].events = POLLIN; p[np].revents = 0; np++;
        if (feed >= 0) { p[np].fd = feed; p[np].events = POLLIN; p[np].revents = 0; np++; }
        int pr = poll(p, (nfds_t)np, (int)wait_ms);
        if (pr < 0) continue; /* EINTR: handlers already wrote to the wake pipe */

        if (p[0].revents) {
            char drain[64];
            while (read(wake[0], drain, sizeof drain) > 0) {}
        }
        if (np > 1 && p[1].revents) {
            ssize_t n = read(feed, fbuf + fbuf_len, sizeof fbuf - fbuf_len);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) {
                /* The caller is gone (or broke the protocol): nobody can extend the deadline. */
                (void)close(feed);
                feed = -1;
                START_TERMINATE(LH_END_ORPHANED);
                continue;
            }
            fbuf_len += (size_t)n;
            size_t off = 0;
            while (fbuf_len - off >= sizeof(lh_feed_msg_t)) {
                lh_feed_msg_t m;
                memcpy(&m, fbuf + off, sizeof m);
                off += sizeof m;
                if (m.op == LH_FEED_DEADLINE) {
                    /* Newest wins (it may shorten); while stopping, only ever shorten. */
                    if (!terminating) hard = m.value;
                    else if (m.value < kill_at) kill_at = m.value;
                } else if (m.op == LH_FEED_TERMINATE) {
                    START_TERMINATE(LH_END_TERMINATED);
                }
            }
            memmove(fbuf, fbuf + off, fbuf_len - off);
            fbuf_len -= off;
        }
    }
#undef START_TERMINATE

    /* The run is over: no member of its group may outlive it (leftover grandchildren). */
    (void)killpg(job, SIGKILL);
    send_status(a->status_fd, LH_STATUS_ENDED, reason, job_status, escalated);
    _exit(0);
}

/* ---- caller side (ordinary code: runs in the multithreaded daemon) ---- */

static int make_pipe_cloexec(int fds[2]) {
#if defined(__linux__)
    return pipe2(fds, O_CLOEXEC);
#else
    if (pipe(fds) != 0) return -1;
    set_cloexec(fds[0]);
    set_cloexec(fds[1]);
    return 0;
#endif
}

/* Linux: SOCK_SEQPACKET keeps each 16-byte record whole even on a non-blocking send into
 * a nearly full buffer (a stream socket could write half a record and desync the feed). */
static int make_feed_socket(int fds[2]) {
#if defined(__linux__)
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
#else
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return -1;
    set_cloexec(fds[0]);
    set_cloexec(fds[1]);
#if defined(SO_NOSIGPIPE)
    int one = 1;
    setsockopt(fds[0], SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    return 0;
#endif
}

static void close_if_open(int *fd) {
    if (*fd >= 0) {
        (void)close(*fd);
        *fd = -1;
    }
}

int lh_spawn_supervised(const char *path, char *const argv[], char *const envp[],
                        const char *cwd, int64_t initial_deadline_ms_from_now,
                        int64_t kill_grace_ms, lh_supervised_t *out) {
    int feed[2] = {-1, -1}, status[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    out->supervisor_pid = -1;
    out->job_pid = -1;
    out->feed_fd = out->status_fd = out->stdout_fd = out->stderr_fd = -1;
    out->failure_stage = LH_STAGE_NONE;
    if (path == NULL || argv == NULL || argv[0] == NULL || envp == NULL || kill_grace_ms < 0) {
        out->failure_stage = LH_STAGE_SETUP;
        return EINVAL;
    }
    if (make_feed_socket(feed) != 0 || make_pipe_cloexec(status) != 0 ||
        make_pipe_cloexec(outp) != 0 || make_pipe_cloexec(errp) != 0) {
        int e = errno;
        close_if_open(&feed[0]); close_if_open(&feed[1]);
        close_if_open(&status[0]); close_if_open(&status[1]);
        close_if_open(&outp[0]); close_if_open(&outp[1]);
        close_if_open(&errp[0]); close_if_open(&errp[1]);
        out->failure_stage = LH_STAGE_SETUP;
        return e;
    }

    struct rlimit rl;
    int max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_fd)
        max_fd = (int)rl.rlim_cur;

    lh_child_args_t args = {
        .path = path, .argv = argv, .envp = envp, .cwd = cwd,
        .feed_fd = feed[1], .status_fd = status[1], .out_fd = outp[1], .err_fd = errp[1],
        .hard_deadline_ns = lh_supervisor_clock_ns() + initial_deadline_ms_from_now * LH_NS_PER_MS,
        .grace_ns = kill_grace_ms * LH_NS_PER_MS,
        .max_fd = max_fd,
    };

    /* Block every signal around fork so no daemon handler can run in the child before it
     * has reset its dispositions (same reasoning as posix_spawn implementations). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t sup = fork();
    if (sup == 0) supervisor_main(&args);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    close_if_open(&feed[1]);
    close_if_open(&status[1]);
    close_if_open(&outp[1]);
    close_if_open(&errp[1]);
    if (sup < 0) {
        close_if_open(&feed[0]); close_if_open(&status[0]);
        close_if_open(&outp[0]); close_if_open(&errp[0]);
        out->failure_stage = LH_STAGE_FORK_SUPERVISOR;
        return fork_errno;
    }
    (void)setpgid(sup, sup); /* mirror of the child's own call: no window in our group */
    (void)set_nonblock(feed[0]); /* a frozen supervisor must never block the daemon */

    lh_status_msg_t m;
    size_t got = 0;
    while (got < sizeof m) {
        ssize_t n = read(status[0], (char *)&m + got, sizeof m - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    if (got == sizeof m && m.kind == LH_STATUS_STARTED) {
        out->supervisor_pid = sup;
        out->job_pid = m.a;
        out->feed_fd = feed[0];
        out->status_fd = status[0];
        out->stdout_fd = outp[0];
        out->stderr_fd = errp[0];
        return 0;
    }
    close_if_open(&feed[0]); close_if_open(&status[0]);
    close_if_open(&outp[0]); close_if_open(&errp[0]);
    (void)lh_supervised_reap(sup);
    if (got == sizeof m && m.kind == LH_STATUS_SPAWN_FAILED) {
        out->failure_stage = m.a;
        return m.b != 0 ? m.b : EIO;
    }
    out->failure_stage = LH_STAGE_HANDSHAKE;
    return EIO;
}

static int send_feed(int feed_fd, int32_t op, int64_t value) {
    lh_feed_msg_t m = {op, 0, value};
#if defined(MSG_NOSIGNAL)
    const int flags = MSG_NOSIGNAL;
#else
    const int flags = 0; /* SO_NOSIGPIPE is set on this socket instead */
#endif
    for (;;) {
        ssize_t n = send(feed_fd, &m, sizeof m, flags);
        if (n == (ssize_t)sizeof m) return 0;
        if (n < 0 && errno == EINTR) continue;
        /* A short write on a 16-byte record only happens with a full buffer; treat as EAGAIN. */
        return n < 0 ? errno : EAGAIN;
    }
}

int lh_supervised_set_deadline_ns(int feed_fd, int64_t deadline_ns) {
    return send_feed(feed_fd, LH_FEED_DEADLINE, deadline_ns);
}

int lh_supervised_terminate(int feed_fd) { return send_feed(feed_fd, LH_FEED_TERMINATE, 0); }

int lh_supervised_reap(int32_t supervisor_pid) {
    int st;
    pid_t r;
    do {
        r = waitpid(supervisor_pid, &st, 0);
    } while (r < 0 && errno == EINTR);
    return r == supervisor_pid ? st : -1;
}

int lh_decode_wait_status(int32_t status, int32_t *value) {
    if (WIFEXITED(status)) { *value = WEXITSTATUS(status); return 1; }
    if (WIFSIGNALED(status)) { *value = WTERMSIG(status); return 2; }
    *value = 0;
    return 0;
}
