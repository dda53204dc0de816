import Testing

@Test func LeaseholdTestsBuilds() { #expect(Bool(true)) }
