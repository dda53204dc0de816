import Testing

@Test func LeaseholdIntegrationTestsBuilds() { #expect(Bool(true)) }
