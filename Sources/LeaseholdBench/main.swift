import Foundation

// LeaseholdBench [all|cost|failover|placement|footprint|tls|replicas] [--quick]
//   [--crash-trials N] [--crash-trials-10s N] [--crash-release-trials N] [--graceful-trials N] [--results DIR]
var options = BenchOptions()
var scenario = "all"
var arguments = Array(CommandLine.arguments.dropFirst())
while !arguments.isEmpty {
    let argument = arguments.removeFirst()
    func value() -> String {
        guard !arguments.isEmpty else {
            print("missing value for \(argument)")
            exit(2)
        }
        return arguments.removeFirst()
    }
    switch argument {
    case "--quick": options.quick = true
    case "--crash-trials": options.crashTrials2s = Int(value()) ?? options.crashTrials2s
    case "--crash-trials-10s": options.crashTrials10s = Int(value()) ?? options.crashTrials10s
    case "--crash-release-trials": options.crashReleaseTrials = Int(value()) ?? options.crashReleaseTrials
    case "--graceful-trials": options.gracefulTrials = Int(value()) ?? options.gracefulTrials
    case "--results": options.resultsDirectory = value()
    case "--only-jobs": options.onlyJobs = Int(value())
    case "all", "cost", "failover", "placement", "footprint", "tls", "replicas": scenario = argument
    case "-h", "--help":
        print(
            "usage: LeaseholdBench [all|cost|failover|placement|footprint|tls|replicas] [--quick] [--crash-trials N] [--crash-trials-10s N] [--crash-release-trials N] [--graceful-trials N] [--results DIR]"
        )
        exit(0)
    default:
        print("unknown argument '\(argument)'")
        exit(2)
    }
}
if options.quick {
    options.crashTrials2s = min(options.crashTrials2s, 3)
    options.crashTrials10s = 0
    options.crashReleaseTrials = min(options.crashReleaseTrials, 3)
    options.gracefulTrials = min(options.gracefulTrials, 3)
}

let machine = MachineInfo.current()
print(
    "LeaseholdBench \(scenario)\(options.quick ? " --quick" : "") on \(machine.nproc) cores, \(machine.cpuModel), load \(machine.loadAverage)"
)
let started = benchClock.now
do {
    if scenario == "all" || scenario == "placement" { try await PlacementScenario.run(options: options) }
    if scenario == "all" || scenario == "cost" { try await CostScenario.run(options: options) }
    if scenario == "all" || scenario == "failover" { try await FailoverScenario.run(options: options) }
    if scenario == "all" || scenario == "footprint" { try await FootprintScenario.run(options: options) }
    if scenario == "all" || scenario == "tls" { try await TLSCostScenario.run(options: options) }
    if scenario == "all" || scenario == "replicas" { try await ReplicaWaitScenario.run(options: options) }
} catch {
    print("bench failed: \(error)")
    exit(1)
}
print("\ndone in \(fmt((benchClock.now - started).secondsValue)) s, load \(loadAverage())")
