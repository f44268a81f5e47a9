import Conformance
import Foundation
import NBD

/// The frontend's user side for `xensplit conformance --role frontend --device vbd`: an
/// NBD export of the disk (our blkfront's `--nbd`). Each batch opens a connection of its
/// own, on a thread of its own, so a blocked request never holds the peer that must
/// answer it, and a frontend that reconnected meanwhile is reached afresh.
struct NBDFrontendIO: FrontendBlockIO {
    let address: NBDAddress

    func run(_ batch: [FrontendBlockIOOperation]) async throws -> [FrontendBlockIOResult] {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { [address] in
                continuation.resume(with: Result { try Self.blocking(address, batch) })
            }
            thread.start()
        }
    }

    static func blocking(_ address: NBDAddress, _ batch: [FrontendBlockIOOperation]) throws -> [FrontendBlockIOResult] {
        let client = try NBDClient(address)
        defer { client.close() }
        let commands: [NBDClient.Command] = batch.map { operation in
            switch operation {
            case let .read(offset, length): .read(offset: offset, length: UInt32(length))
            case let .write(offset, bytes): .write(offset: offset, bytes: bytes)
            case .flush: .flush
            }
        }
        return try client.run(commands).map { reply in
            FrontendBlockIOResult(error: reply.error == .success ? nil : "\(reply.error)", data: reply.data)
        }
    }
}
