import Dispatch
import Foundation

/// A block frontend's user side through ``FrontendAgent``: the agent does each batch on
/// `device` (a disk of the guest, /dev/xvdb) with O_DIRECT, every operation at once.
public struct AgentBlockIO: FrontendBlockIO {
    public let agent: FrontendAgent
    public let device: String
    /// How long one batch may take in the guest; the peer's own patience bounds the check.
    static let batchLimit: Duration = .seconds(300)
    /// A console carries some tens of KB/s: a 1 MiB write (1.4 MB of base64) takes most of a minute.
    public var transferAllowance: Duration { .seconds(90) }

    public init(agent: FrontendAgent, device: String) {
        self.agent = agent
        self.device = device
    }

    public func run(_ batch: [FrontendBlockIOOperation]) async throws -> [FrontendBlockIOResult] {
        let body = batch.map { operation -> String in
            switch operation {
            case let .read(offset, length): "r \(offset) \(length)"
            case let .write(offset, bytes): "w \(offset) \(Data(bytes).base64EncodedString())"
            case .flush: "f"
            }
        }
        let (agent, command) = (agent, "io \(device) \(batch.count)")
        // The call blocks until the guest has done the batch: off the cooperative pool.
        let lines = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try agent.call(command, body: body, within: Self.batchLimit) { $0.hasPrefix("done ") } })
            }
        }
        var results = [FrontendBlockIOResult?](repeating: nil, count: batch.count)
        for line in lines where !line.hasPrefix("done ") {
            let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard words.count >= 2, let index = Int(words[0]), results.indices.contains(index) else {
                throw PeerError.badResponse("the agent answered `\(line.prefix(60))` to a batch of \(batch.count)")
            }
            switch words[1] {
            case "ok":
                var data: [UInt8] = []
                if words.count == 3 {
                    guard let decoded = Data(base64Encoded: String(words[2])) else { throw PeerError.badResponse("the agent's read \(index) is not base64") }
                    data = Array(decoded)
                }
                results[index] = FrontendBlockIOResult(error: nil, data: data)
            case "error":
                results[index] = FrontendBlockIOResult(error: words.count == 3 ? String(words[2]) : "an error")
            default:
                throw PeerError.badResponse("the agent answered `\(line.prefix(60))`")
            }
        }
        guard results.allSatisfy({ $0 != nil }) else {
            throw PeerError.badResponse("the agent answered \(results.compactMap { $0 }.count) of \(batch.count) operations")
        }
        return results.map { $0! }
    }
}

/// A net frontend's user side for frames: where the checks send frames out through the
/// frontend and read what it delivered (our netfront's TAP device through a packet socket,
/// or a guest's interface through ``AgentFrames``).
protocol FrontendFrames: AnyObject, Sendable {
    /// Binds to `interface` (a name, or for the agent a MAC address too); returns what it did.
    @discardableResult
    func attach(_ interface: String) throws(PeerError) -> String
    /// Whether the interface is operationally up within `within`.
    func waitRunning(within: Duration) async throws -> Bool
    /// Sends `frame` out of the interface, into the frontend.
    func send(_ frame: [UInt8]) throws(PeerError)
    /// The next frame the frontend delivered that `matches`, within `within`; nil when none.
    func receive(within: Duration, matching matches: ([UInt8]) -> Bool) throws(PeerError) -> [UInt8]?
}

extension VifHostSide: FrontendFrames {}

/// A guest's interface as the frontend's user side, through ``FrontendAgent``.
public final class AgentFrames: FrontendFrames, @unchecked Sendable {
    // SAFETY (@unchecked): immutable; the agent is thread-safe.
    let agent: FrontendAgent
    /// One command's bound: the console is slow, not stuck.
    static let commandLimit: Duration = .seconds(60)

    public init(agent: FrontendAgent) { self.agent = agent }

    func attach(_ interface: String) throws(PeerError) -> String {
        let reply = try agent.call("link \(interface)", within: Self.commandLimit)
        return "\(interface) in the guest: \(reply.first ?? "")"
    }

    func waitRunning(within: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + within
        while true {
            if try agent.call("running", within: Self.commandLimit).first == "ok 1" { return true }
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Posted, not waited for: a console round trip per frame would pace the tx checks at
    /// the console's speed. A refusal comes back on a later call.
    func send(_ frame: [UInt8]) throws(PeerError) {
        var text = Array("send ".utf8)
        text.reserveCapacity(text.count + frame.count * 2)
        for byte in frame {
            text.append(hexDigits[Int(byte >> 4)])
            text.append(hexDigits[Int(byte & 15)])
        }
        try agent.post(String(decoding: text, as: UTF8.self))
    }

    func receive(within: Duration, matching matches: ([UInt8]) -> Bool) throws(PeerError) -> [UInt8]? {
        try agent.checkPosted()
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            let left = max(1, Int((deadline - ContinuousClock.now) / .milliseconds(1)))
            let reply = try agent.call("recv \(min(left, 1000))", within: Self.commandLimit)
            guard let line = reply.first, line.hasPrefix("frame ") else { continue }
            let words = line.split(separator: " ")
            guard words.count == 3, let frame = Self.bytes(hex: words[2]) else {
                throw PeerError.badResponse("the agent answered recv with `\(line.prefix(60))`")
            }
            if matches(frame) { return frame }
        }
        return nil
    }

    static func bytes(hex: Substring) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let high = nibble(digits[i]), let low = nibble(digits[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// The value of one hex digit (either case), or nil.
    static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a") ... UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A") ... UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)
