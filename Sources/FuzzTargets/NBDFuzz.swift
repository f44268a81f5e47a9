import Glibc
import Logging
import NBD

/// A fuzz target for the NBD server: the bytes are everything a hostile client sends on
/// one connection (client flags, options, transmission requests and payloads), then it
/// half-closes. The server serves them through its real handshake and transmission code
/// (``NBDServer/serve(connected:)``) against an in-memory export, while another thread
/// reads whatever it answers. The server must not trap, must end the connection when
/// the client's bytes end (or the run times out as a hang), must keep the export's size,
/// and must at least greet every client.
public enum NBDFuzz {
    static let exportSize = 64 << 10
    nonisolated(unsafe) static let export = NBDMemoryExport(size: exportSize)
    nonisolated(unsafe) static let server: NBDServer<NBDMemoryExport> = {
        var logger = Logger(label: "xensplit.fuzz.nbd")
        logger.logLevel = .critical
        return NBDServer(export: export, name: "fuzz", maximumRequestsPerClient: 8,
                         maximumBufferedBytesPerClient: 1 << 20, logger: logger)
    }()

    /// The client's end: reads and counts the server's bytes until it closes.
    final class Reader: @unchecked Sendable {
        // SAFETY (@unchecked): `received` is written by the reading thread and read after it is joined.
        let descriptor: Int32
        var received = 0
        init(descriptor: Int32) { self.descriptor = descriptor }
        func run() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { return }
                received += n
            }
        }
    }

    public static func run(_ input: UnsafeRawBufferPointer) {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else { fatalError("socketpair: errno \(errno)") }
        // The whole input fits the socket's buffer (libFuzzer's inputs here are small), so
        // it is sent before the server starts, then the client half-closes.
        var sent = 0
        while sent < input.count {
            let n = send(pair[1], input.baseAddress! + sent, input.count - sent, Int32(MSG_NOSIGNAL))
            guard n > 0 else { fatalError("sending the input: errno \(errno)") }
            sent += n
        }
        shutdown(pair[1], Int32(SHUT_WR))
        let reader = Reader(descriptor: pair[1])
        let box = Unmanaged.passRetained(reader).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { raw in
            let reader = Unmanaged<Reader>.fromOpaque(raw!).takeRetainedValue()
            reader.run()
            return nil
        }, box) == 0 else { fatalError("pthread_create") }
        server.serve(connected: pair[0])
        pthread_join(thread, nil)
        close(pair[1])
        precondition(export.size == UInt64(exportSize), "the export changed size")
        // The server greets every client first: 18 bytes (magic, option magic, flags).
        precondition(reader.received >= 18, "the server sent \(reader.received) bytes, not even its greeting")
    }
}
