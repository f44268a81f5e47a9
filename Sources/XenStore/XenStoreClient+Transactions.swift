/// The operations of a client inside one transaction.
public struct XenStoreTransaction: Sendable {
    /// The client.
    public let client: XenStoreClient
    /// The `tx_id` xenstored gave.
    public let id: XenStoreTransactionID

    /// XS_READ in the transaction.
    public func read(_ path: String) async throws(XenStoreError) -> [UInt8] { try await client.read(path, transaction: id) }
    /// XS_READ in the transaction, as UTF-8.
    public func readString(_ path: String) async throws(XenStoreError) -> String { try await client.readString(path, transaction: id) }
    /// XS_WRITE in the transaction.
    public func write(_ path: String, _ value: [UInt8]) async throws(XenStoreError) { try await client.write(path, value, transaction: id) }
    /// XS_WRITE of a string in the transaction.
    public func write(_ path: String, _ value: String) async throws(XenStoreError) { try await client.write(path, value, transaction: id) }
    /// XS_MKDIR in the transaction.
    public func mkdir(_ path: String) async throws(XenStoreError) { try await client.mkdir(path, transaction: id) }
    /// XS_RM in the transaction.
    public func rm(_ path: String) async throws(XenStoreError) { try await client.rm(path, transaction: id) }
    /// The children of a node in the transaction.
    public func directory(_ path: String) async throws(XenStoreError) -> [String] { try await client.directory(path, transaction: id) }
    /// XS_GET_PERMS in the transaction.
    public func getPermissions(_ path: String) async throws(XenStoreError) -> [XenStorePermission] {
        try await client.getPermissions(path, transaction: id)
    }
    /// XS_SET_PERMS in the transaction.
    public func setPermissions(_ path: String, _ permissions: [XenStorePermission]) async throws(XenStoreError) {
        try await client.setPermissions(path, permissions, transaction: id)
    }
}

extension XenStoreClient {
    /// XS_TRANSACTION_START: returns the new transaction's id.
    public func transactionStart() async throws(XenStoreError) -> XenStoreTransactionID {
        let reply = try await request(.transactionStart)
        let digits = reply.prefix { $0 != 0 }
        guard let id = XenStoreNumber.decimal(digits, max: UInt64(UInt32.max)), id != 0 else {
            throw .invalidNumber(field: "TRANSACTION_START reply", value: XenStorePath.printable(digits))
        }
        return XenStoreTransactionID(id)
    }

    /// XS_TRANSACTION_END: commits (may throw `.daemon(.eagain)` on a conflict) or aborts.
    public func transactionEnd(_ id: XenStoreTransactionID, commit: Bool) async throws(XenStoreError) {
        _ = try await request(.transactionEnd(commit: commit), transaction: id)
    }

    /// Runs `body` in a transaction and commits it, starting over when the commit reports a
    /// conflict (EAGAIN), up to `maxAttempts` times. If `body` throws, the transaction is
    /// aborted and the error rethrown.
    public func withTransaction<T: Sendable>(maxAttempts: Int = 32,
                                             _ body: (XenStoreTransaction) async throws -> T) async throws -> T {
        for _ in 0 ..< maxAttempts {
            let id = try await transactionStart()
            let result: T
            do {
                result = try await body(XenStoreTransaction(client: self, id: id))
            } catch {
                try? await transactionEnd(id, commit: false)
                throw error
            }
            do {
                try await transactionEnd(id, commit: true)
                return result
            } catch .daemon(.eagain) {
                continue
            }
        }
        throw XenStoreError.transactionRetriesExhausted(attempts: maxAttempts)
    }
}
