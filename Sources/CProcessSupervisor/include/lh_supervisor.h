/*
 * CProcessSupervisor: a generic "deadline watchdog spawner".
 *
 * lh_spawn_supervised() forks a small supervisor process which in turn forks the job
 * into a fresh process group. The supervisor knows nothing about leases: it only knows a
 * hard deadline by which the job's whole process group must be dead. The caller keeps
 * moving that deadline through the feed socket. The group is stopped (SIGTERM, then
 * SIGKILL when the grace runs out or the hard deadline arrives, whichever is first) when:
 *   - the hard deadline minus the kill grace is reached (no fresh deadline arrived),
 *   - the caller asks for it (terminate message, or SIGTERM sent to the supervisor),
 *   - the caller's end of the feed closes (the caller died, e.g. kill -9 or OOM).
 * Enforcement lives outside the caller on purpose: a dead or frozen caller cannot keep
 * a job alive past the deadline it last granted.
 */
#ifndef LH_SUPERVISOR_H
#define LH_SUPERVISOR_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Why the supervisor stopped the job (or that it stopped on its own). */
typedef enum {
    LH_END_OWN_EXIT = 0,    /* the job's leader exited by itself */
    LH_END_DEADLINE = 1,    /* the hard deadline (minus grace) passed without extension */
    LH_END_ORPHANED = 2,    /* the caller's end of the feed closed (caller died) */
    LH_END_TERMINATED = 3,  /* the caller (or a SIGTERM to the supervisor) asked for it */
} lh_end_reason_t;

/** Which step of spawning failed (lh_supervised_t.failure_stage). */
typedef enum {
    LH_STAGE_NONE = 0,
    LH_STAGE_SETUP = 1,             /* pipes/sockets in the caller */
    LH_STAGE_FORK_SUPERVISOR = 2,
    LH_STAGE_SUPERVISOR_SETUP = 3,  /* inside the supervisor before the job fork */
    LH_STAGE_FORK_JOB = 4,
    LH_STAGE_CHDIR = 5,             /* the job could not enter its working directory */
    LH_STAGE_EXEC = 6,              /* execve of the job failed */
    LH_STAGE_HANDSHAKE = 7,         /* the supervisor vanished before reporting */
} lh_spawn_stage_t;

/** Handles of one supervised run; every fd is close-on-exec and owned by the caller. */
typedef struct {
    int32_t supervisor_pid;  /* child of the caller; reap it with lh_supervised_reap */
    int32_t job_pid;         /* the job's leader; also its process group id */
    int feed_fd;             /* caller -> supervisor (deadlines, terminate); close = orphan */
    int status_fd;           /* supervisor -> caller (lh_status_msg_t records) */
    int stdout_fd;           /* read end of the job's stdout */
    int stderr_fd;           /* read end of the job's stderr */
    int32_t failure_stage;   /* lh_spawn_stage_t when lh_spawn_supervised fails */
} lh_supervised_t;

/** Kinds of lh_status_msg_t records. */
enum { LH_STATUS_STARTED = 1, LH_STATUS_SPAWN_FAILED = 2, LH_STATUS_ENDED = 3 };

/** One fixed-size record on the status pipe (atomic: smaller than PIPE_BUF). */
typedef struct {
    int32_t kind;   /* LH_STATUS_* */
    int32_t a;      /* STARTED: job pid; SPAWN_FAILED: stage; ENDED: lh_end_reason_t */
    int32_t b;      /* SPAWN_FAILED: errno; ENDED: raw wait status of the job leader */
    int32_t c;      /* ENDED: 1 if SIGKILL had to be sent to a group that outlived SIGTERM */
} lh_status_msg_t;

/**
 * Spawns the supervisor and, through it, the job. Blocks only until the job has exec'd
 * (or failed to). `path` is used as is by execve (the caller resolves PATH); `cwd` may be
 * NULL. `initial_deadline_ms_from_now` is the hard deadline by which the whole group must
 * be dead; SIGTERM goes out `kill_grace_ms` before it. Returns 0, or an errno value with
 * out->failure_stage saying which step failed (out's fds are then closed).
 */
int lh_spawn_supervised(const char *path, char *const argv[], char *const envp[],
                        const char *cwd, int64_t initial_deadline_ms_from_now,
                        int64_t kill_grace_ms, lh_supervised_t *out);

/** Now on the supervisor's clock (CLOCK_BOOTTIME on Linux: counts suspend, like ContinuousClock). */
int64_t lh_supervisor_clock_ns(void);

/** Sends a new absolute hard deadline (lh_supervisor_clock_ns time base). 0 or errno; never raises SIGPIPE. */
int lh_supervised_set_deadline_ns(int feed_fd, int64_t deadline_ns);

/** Asks the supervisor to stop the group now (SIGTERM, grace, SIGKILL). 0 or errno; never raises SIGPIPE. */
int lh_supervised_terminate(int feed_fd);

/** Blocking waitpid for the supervisor (retries EINTR). Returns its raw status, or -1. */
int lh_supervised_reap(int32_t supervisor_pid);

/** Decodes a raw wait status: returns 1 and the code if exited, 2 and the signal if signalled, 0 otherwise. */
int lh_decode_wait_status(int32_t status, int32_t *value);

#ifdef __cplusplus
}
#endif

#endif
