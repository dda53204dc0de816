/// Text that a job (or anything else outside the daemon) wrote, made safe for a log line: a
/// carriage return, line feed or escape sequence in a job's output must not forge daemon log
/// lines or drive the operator's terminal.
package enum LogText {
    /// `text` with every control character (C0, DEL, C1) written as a visible escape: `\r`,
    /// `\n`, `\t` and `\x1b`-style hex for the rest. Backslashes stay as they are: a job that
    /// prints `\x1b` literally forges nothing, and escaping twice changes nothing.
    package static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\r": out += "\\r"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if isControl(scalar) {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
    }
}
