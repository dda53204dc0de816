import Testing

@Test func RedisClientTestsBuilds() { #expect(Bool(true)) }
