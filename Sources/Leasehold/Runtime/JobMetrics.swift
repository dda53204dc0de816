import CoreMetrics
import LeaseholdElection

/// The job framework's own metrics, on the same factory as the election's.
extension LeaseholdMetrics {
    /// Counts handler runs by result (success, failure, timeout, cancelled).
    public func jobRuns(job: String, result: String) -> Counter {
        Counter(label: "leasehold_job_runs_total", dimensions: [("job", job), ("result", result)], factory: factory)
    }

    /// Duration of handler runs.
    public func jobRunDuration(job: String) -> Timer {
        Timer(
            label: "leasehold_job_run_duration_seconds", dimensions: [("job", job)], preferredDisplayUnit: .seconds,
            factory: factory)
    }

    /// 1 while a stopped handler of the job has not returned long after it was told to stop
    /// (the member has withdrawn from the job meanwhile), else 0.
    public func handlerStuck(job: String) -> Gauge {
        Gauge(label: "leasehold_handler_stuck", dimensions: [("job", job)], factory: factory)
    }

    /// Counts handlers still running after their validity ended.
    public func handlerOverrun(job: String) -> Counter {
        Counter(label: "leasehold_handler_overrun_total", dimensions: [("job", job)], factory: factory)
    }

    /// 1 for the digest of the catalog this member runs (0 for one it ran before a reload).
    public func catalogInfo(digest: String) -> Gauge {
        Gauge(label: "leasehold_catalog_info", dimensions: [("digest", digest)], factory: factory)
    }

    /// Counts catalog reloads by result (success, failure).
    public func catalogReloads(result: String) -> Counter {
        Counter(label: "leasehold_catalog_reloads_total", dimensions: [("result", result)], factory: factory)
    }

    /// When the job last succeeded (Redis time, seconds since the epoch), as its leader knows it.
    public func lastSuccessTimestamp(job: String) -> Gauge {
        Gauge(label: "leasehold_job_last_success_timestamp_seconds", dimensions: [("job", job)], factory: factory)
    }

    /// When the leader plans the job's next start (slot plus jitter, or a pending retry).
    public func nextRunTimestamp(job: String) -> Gauge {
        Gauge(label: "leasehold_job_next_run_timestamp_seconds", dimensions: [("job", job)], factory: factory)
    }

    /// 1 while an operator has paused the job, else 0 (exported by its leader).
    public func jobPaused(job: String) -> Gauge {
        Gauge(label: "leasehold_job_paused", dimensions: [("job", job)], factory: factory)
    }

    /// Counts retries started (tries after the first).
    public func jobRetries(job: String) -> Counter {
        Counter(label: "leasehold_job_retries_total", dimensions: [("job", job)], factory: factory)
    }

    /// Counts slots skipped because they could not start within `starting_deadline`.
    public func missedSlots(job: String) -> Counter {
        Counter(label: "leasehold_job_missed_slots_total", dimensions: [("job", job)], factory: factory)
    }
}
