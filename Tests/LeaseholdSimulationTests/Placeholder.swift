import Testing

@Test func LeaseholdSimulationTestsBuilds() { #expect(Bool(true)) }
