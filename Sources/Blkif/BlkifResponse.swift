import SharedMemory

/// A response (`io/blkif.h: struct blkif_response`).
public struct BlkifResponse: Sendable, Hashable {
    /// `id`: copied from the request.
    public var id: UInt64
    /// `operation`: copied from the request as the frontend wrote it, even when it was
    /// not a known code (the backend answers those too, with ``BlkifStatus/notSupported``).
    public var operation: UInt8
    /// `status`.
    public var status: BlkifStatus

    /// A response echoing a raw operation byte.
    @inlinable
    public init(id: UInt64, operation: UInt8, status: BlkifStatus) {
        self.id = id
        self.operation = operation
        self.status = status
    }

    /// A response to a request with a known operation.
    @inlinable
    public init(id: UInt64, operation: BlkifOperation, status: BlkifStatus) {
        self.init(id: id, operation: operation.rawValue, status: status)
    }

    /// Reads and validates the response in the slot at `offset` (each field once).
    /// The operation byte is returned as written; the frontend matches it to its request.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int, abi: BlkifABI) throws(BlkifError) -> BlkifResponse {
        let size = abi.layout.responseSize
        guard offset >= 0, offset <= view.count, size <= view.count - offset else {
            throw .slotOutOfBounds(offset: offset, length: size, size: view.count)
        }
        let id = view.load(UInt64.self, at: offset + BlkifLayout.responseIDOffset)
        let operation = view.load(UInt8.self, at: offset + BlkifLayout.responseOperationOffset)
        let status = try BlkifStatus(validating: view.load(Int16.self, at: offset + BlkifLayout.responseStatusOffset))
        return BlkifResponse(id: id, operation: operation, status: status)
    }

    /// Writes the response into the slot at `offset`, padding zeroed. The slot must lie
    /// inside `view`.
    @inlinable
    public func encode(into view: SharedView, at offset: Int, abi: BlkifABI) {
        view.fill(0, at: offset, length: abi.layout.responseSize)
        view.store(id, at: offset + BlkifLayout.responseIDOffset)
        view.store(operation, at: offset + BlkifLayout.responseOperationOffset)
        view.store(status.rawValue, at: offset + BlkifLayout.responseStatusOffset)
    }
}
