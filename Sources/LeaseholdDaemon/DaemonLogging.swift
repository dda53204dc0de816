import Foundation
import Logging

/// How the daemon writes its log lines.
public enum LogFormat: String, Sendable, CaseIterable {
    /// `2026-11-26T22:00:00.123Z info  acquired leadership job=report token=17`
    case text
    /// One JSON object per line.
    case json
}

/// A swift-log handler writing one line per event to stderr, as text or JSON.
///
/// Writes go through a lock so lines from concurrent tasks never interleave.
public struct DaemonLogHandler: LogHandler {
    /// Line format.
    public let format: LogFormat
    /// Logger label (shown in JSON as `logger`).
    public let label: String
    /// Minimum level.
    public var logLevel: Logger.Level
    /// Metadata attached to every line of this logger.
    public var metadata: Logger.Metadata = [:]

    /// Creates a handler.
    public init(label: String, format: LogFormat, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    /// Reads or writes one metadata entry.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Emits a line.
    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let line = Self.render(
            format: format, label: label, level: event.level, message: event.message.description,
            metadata: merged, date: Date())
        Self.write(line + "\n")
    }

    /// Renders one line (pure: used by tests).
    public static func render(
        format: LogFormat, label: String, level: Logger.Level, message: String, metadata: Logger.Metadata, date: Date
    ) -> String {
        let time = timestamp(date)
        switch format {
        case .text:
            let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\(textValue($0.value))" }
            let levelText = level.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)
            return ([time, levelText, message] + fields).joined(separator: " ")
        case .json:
            var object: [String: Any] = ["time": time, "level": level.rawValue, "message": message, "logger": label]
            for (key, value) in metadata where object[key] == nil { object[key] = jsonValue(value) }
            guard
                let data = try? JSONSerialization.data(
                    withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            else {
                return #"{"level":"error","message":"unencodable log line"}"#
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    private static func textValue(_ value: Logger.Metadata.Value) -> String {
        let text = value.description
        return text.contains(" ") || text.isEmpty ? "\"\(text)\"" : text
    }

    private static func jsonValue(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): return text
        case .stringConvertible(let convertible): return convertible.description
        case .array(let items): return items.map(jsonValue)
        case .dictionary(let dictionary): return dictionary.mapValues(jsonValue)
        }
    }

    private static func timestamp(_ date: Date) -> String {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return date.formatted(style)
    }

    private static let lock = NSLock()

    private static func write(_ line: String) {
        lock.lock()
        defer { lock.unlock() }
        FileHandle.standardError.write(Data(line.utf8))
    }
}
