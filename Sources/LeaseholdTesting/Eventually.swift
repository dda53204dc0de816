/// Polls `probe` until it returns a value, and throws once `timeout` passes without one: the
/// one way the tests wait for something, never a bare sleep. `diagnostics` is appended to the
/// error so a CI failure can be debugged from its output alone.
@discardableResult
public func eventually<T>(
    _ what: @autoclosure () -> String, within timeout: Duration = .seconds(15),
    every interval: Duration = .milliseconds(20),
    diagnostics: () -> String = { "" }, _ probe: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await probe() { return value }
        if ContinuousClock.now >= deadline {
            let details = diagnostics()
            throw TestSupportError(
                "timed out after \(timeout) waiting for \(what())" + (details.isEmpty ? "" : "\n\(details)"))
        }
        try await Task.sleep(for: interval)
    }
}

/// The condition form of ``eventually(_:within:every:diagnostics:_:)-(_,_,_,_,()->T?)``:
/// waits until `condition` holds.
public func eventually(
    _ what: @autoclosure () -> String, within timeout: Duration = .seconds(15),
    every interval: Duration = .milliseconds(20),
    diagnostics: () -> String = { "" }, _ condition: () async throws -> Bool
) async throws {
    try await eventually(what(), within: timeout, every: interval, diagnostics: diagnostics) {
        try await condition() ? () : nil
    }
}

/// Runs `body` with a deadline; false if it did not finish in time (the body is cancelled).
public func finishes(within timeout: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            await body()
            return true
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
}
