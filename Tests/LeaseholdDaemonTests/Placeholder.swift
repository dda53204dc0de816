import Testing

@Test func LeaseholdDaemonTestsBuilds() { #expect(Bool(true)) }
