import Leasehold
import LeaseholdTesting

/// CPU cost of one `LeaseEngine.poll` with nothing to do (steady state: leases held, standby
/// timers armed), by job count: the driver polls on every input (each reply, each timer).
struct EnginePollCost: Codable, Sendable {
    var jobs: Int
    var members: Int
    var led: Int
    var microsecondsPerPoll: Double
}

enum EnginePollBench {
    static func measure(jobs count: Int, members: Int = 10, polls: Int) -> EnginePollCost {
        let ttl = Duration.seconds(2)
        let jobs = benchJobs(count: count, ttl: ttl)
        var driver = EngineDriver(jobs: jobs, member: "m0", incarnation: nil)
        let names = (0..<members).map { "m\($0)" }
        let tick = driver.poll().commands
        driver.answerTick(tick[0], members: names.map { MemberInfo(name: $0, expiresAtMs: 10_000_000, weight: 1) })
        driver.now += .milliseconds(1)
        let candidates = names.map { RendezvousMember(name: $0) }
        var led = 0
        driver.answerAcquires(driver.poll().commands, redisNowMs: 1_000_001) { i, request in
            if Rendezvous.preferred(job: request.job, among: candidates) == "m0" {
                led += 1
                return .acquired(token: UInt64(i + 1), takeover: .acquired, gapMs: nil)
            }
            return .held(by: "m1@x:1", pttlMs: 1500 + Int64(i % 20))
        }
        driver.now += .milliseconds(1)
        driver.poll()
        var engine = driver.engine
        let now = driver.now
        let start = benchClock.now
        for i in 0..<polls {
            let step = engine.poll(now: now + .microseconds(Int64(i)))
            precondition(step.commands.isEmpty)
        }
        let elapsed = benchClock.now - start
        return EnginePollCost(
            jobs: count, members: members, led: led, microsecondsPerPoll: elapsed.secondsValue * 1e6 / Double(polls))
    }
}
