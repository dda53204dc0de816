import Leasehold
import Logging

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

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
public struct DaemonLogHandler: Logging.LogHandler {
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
            let levelText = level.rawValue + String(repeating: " ", count: max(0, 7 - level.rawValue.count))
            // One event is one line: a message or value with a line break (an error text, a
            // job's output) must not start what looks like another daemon line.
            return ([time, levelText, LogText.escaped(message)] + fields).joined(separator: " ")
        case .json:
            var object: [String: JSONValue] = [
                "time": .string(time), "level": .string(level.rawValue), "message": .string(message),
                "logger": .string(label),
            ]
            for (key, value) in metadata where object[key] == nil { object[key] = jsonValue(value) }
            return JSONValue.object(object.sorted { $0.key < $1.key }).serialized
        }
    }

    private static func textValue(_ value: Logger.Metadata.Value) -> String {
        let text = LogText.escaped(value.description)
        return text.contains(" ") || text.isEmpty ? "\"\(text)\"" : text
    }

    private static func jsonValue(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let items): .array(items.map(jsonValue))
        case .dictionary(let dictionary):
            .object(dictionary.sorted { $0.key < $1.key }.map { ($0.key, jsonValue($0.value)) })
        }
    }

    private static func timestamp(_ date: Date) -> String {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return date.formatted(style)
    }

    private static func write(_ line: String) {
        StandardError.write(line)
    }
}
