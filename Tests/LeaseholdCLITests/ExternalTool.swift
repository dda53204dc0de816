import Foundation

/// A command-line tool the tests use where the machine has it (promtool, systemd-analyze).
struct ExternalTool {
    /// The repository's root directory (for files under Docs/).
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Where the tool is.
    let path: String

    /// The tool `name` on PATH (plus /usr/bin and /bin), or nil when it is not installed.
    init?(_ name: String) {
        let directories =
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/bin", "/bin"]
        guard let found = directories.map({ "\($0)/\(name)" }).first(where: FileManager.default.isExecutableFile)
        else { return nil }
        path = found
    }

    /// Runs it with `arguments` (in `directory`, if given) to the end; its exit code and
    /// output (stdout and stderr together). The wait happens on a thread of its own: a tool
    /// that takes a second (systemd-analyze does) must not hold one of the test process's
    /// cooperative threads, or every test running beside it stalls with it.
    func run(_ arguments: [String], in directory: URL? = nil) async throws -> (code: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading
        return await withCheckedContinuation { continuation in
            Thread {
                let data = output.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: (process.terminationStatus, String(decoding: data, as: UTF8.self)))
            }.start()
        }
    }
}
