import Foundation

/// A tab-separated data file under Protocols/: `#` lines are comments, the first other
/// line names the columns.
struct ProtocolTable {
    let columns: [String]
    let rows: [[String: String]]

    /// Reads Protocols/`name`, found from this source file's path (Tests/InteropTests/..).
    init(_ name: String, filePath: String = #filePath) throws {
        let root = URL(fileURLWithPath: filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("Protocols").appendingPathComponent(name),
                              encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            .filter { !$0.hasPrefix("#") }
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: name])
        }
        columns = header
        rows = try lines.dropFirst().map { fields in
            guard fields.count == header.count else {
                throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: name])
            }
            return Dictionary(uniqueKeysWithValues: zip(header, fields))
        }
    }
}

/// Bytes from a hex string ("0a0b...").
func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}
