import Testing

@testable import Leasehold

/// `defaults.crash_release`: on by default, `false` turns the guardian off, anything else and
/// any use on a job is an error naming the line and column.
struct CatalogCrashReleaseTests {
    @Test func onByDefaultAndOffWhenTheDefaultsSaySo() throws {
        let plain = try loadCatalog("version: 1\njobs:\n  - { name: a, handler: log, schedule: continuous }\n")
        #expect(plain.crashRelease)
        let off = try loadCatalog(
            "version: 1\ndefaults:\n  crash_release: false\njobs:\n  - { name: a, handler: log, schedule: continuous }\n"
        )
        #expect(!off.crashRelease)
    }

    @Test func aBadValueOrAJobLevelSettingIsALocatedError() {
        #expect(
            catalogErrors(
                "version: 1\ndefaults:\n  crash_release: maybe\njobs:\n  - { name: a, handler: log, schedule: continuous }\n"
            )
                == ["jobs.yaml:3:18: invalid crash_release 'maybe': expected true or false"])
        #expect(
            catalogErrors(
                "version: 1\njobs:\n  - { name: a, handler: log, schedule: continuous, crash_release: false }\n")
                == [
                    "jobs.yaml:3:52: 'crash_release' applies to the whole daemon: set it under 'defaults', not in job 'a'"
                ])
    }
}
