import SharedMemory

/// One direction of a byte-stream ring, as used by xenstore (io/xs_wire.h) and the PV
/// console (io/console.h): a power-of-two data area and a consumer and producer index.
///
/// Both indices live in memory the peer can write, so each operation reads them once and
/// refuses indices that claim more bytes than the ring holds (XENSTORE_ERROR_RINGIDX).
public struct ByteRing: Sendable {
    @usableFromInline let memory: SharedView
    @usableFromInline let dataOffset: Int
    @usableFromInline let consumerOffset: Int
    @usableFromInline let producerOffset: Int
    /// Bytes in the data area.
    public let size: Int

    /// A ring of `size` bytes (a power of two) at `dataOffset`, with 32-bit consumer and
    /// producer indices at the given offsets of `memory`.
    public init(memory: SharedView, dataOffset: Int, size: Int, consumerOffset: Int, producerOffset: Int) throws(RingError) {
        guard size > 0, size & (size - 1) == 0, dataOffset >= 0, dataOffset <= memory.count - size,
              consumerOffset >= 0, consumerOffset <= memory.count - 4, consumerOffset % 4 == 0,
              producerOffset >= 0, producerOffset <= memory.count - 4, producerOffset % 4 == 0
        else { throw .badByteRingGeometry(dataOffset: dataOffset, size: size, memory: memory.count) }
        self.memory = memory
        self.dataOffset = dataOffset
        self.size = size
        self.consumerOffset = consumerOffset
        self.producerOffset = producerOffset
    }

    /// Reads both indices once and checks them against each other.
    @inlinable func indices() throws(RingError) -> (consumer: RingIndex, producer: RingIndex) {
        // Acquire on both: the consumer index pairs with the reader's release after it
        // copied bytes out; the producer index pairs with the writer's release after it
        // copied bytes in.
        let consumer = memory.atomicLoad32(at: consumerOffset, ordering: .acquiring)
        let producer = memory.atomicLoad32(at: producerOffset, ordering: .acquiring)
        guard producer &- consumer <= UInt32(size) else {
            throw .byteRingOverrun(producer: producer, consumer: consumer, size: UInt32(size))
        }
        return (consumer, producer)
    }

    /// Bytes waiting to be read.
    @inlinable public func bytesAvailable() throws(RingError) -> Int {
        let (c, p) = try indices()
        return Int(p &- c)
    }

    /// Bytes that can be written now.
    @inlinable public func freeSpace() throws(RingError) -> Int {
        let (c, p) = try indices()
        return size - Int(p &- c)
    }

    /// Producer side: copies as many of `bytes` as fit and publishes them; returns the count.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(RingError) -> Int {
        let (c, p) = try indices()
        let n = min(bytes.count, size - Int(p &- c))
        guard n > 0, let src = bytes.baseAddress else { return 0 }
        let start = Int(p) & (size - 1)
        let first = min(n, size - start)
        memory.copyBytes(from: UnsafeRawBufferPointer(start: src, count: first), to: dataOffset + start)
        if n > first {
            memory.copyBytes(from: UnsafeRawBufferPointer(start: src + first, count: n - first), to: dataOffset)
        }
        // Release: the data is visible before the new producer index.
        memory.atomicStore32(p &+ UInt32(n), at: producerOffset, ordering: .releasing)
        return n
    }

    /// Consumer side: copies up to `buffer.count` waiting bytes out and releases their
    /// space; returns the count.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(RingError) -> Int {
        let (c, p) = try indices()
        let n = min(buffer.count, Int(p &- c))
        guard n > 0, let dst = buffer.baseAddress else { return 0 }
        let start = Int(c) & (size - 1)
        let first = min(n, size - start)
        memory.copyBytes(at: dataOffset + start, into: UnsafeMutableRawBufferPointer(start: dst, count: first))
        if n > first {
            memory.copyBytes(at: dataOffset, into: UnsafeMutableRawBufferPointer(start: dst + first, count: n - first))
        }
        // Release: our reads of the data complete before the writer may reuse the space.
        memory.atomicStore32(c &+ UInt32(n), at: consumerOffset, ordering: .releasing)
        return n
    }
}

/// The xenstore page shared by a guest and xenstored (io/xs_wire.h:
/// struct xenstore_domain_interface).
public struct XenstoreRingInterface: Sendable {
    /// Byte offsets within the page.
    public enum Layout {
        public static let requests = 0
        public static let responses = 1024
        public static let ringSize = 1024
        public static let requestConsumer = 2048
        public static let requestProducer = 2052
        public static let responseConsumer = 2056
        public static let responseProducer = 2060
        public static let serverFeatures = 2064
        public static let connection = 2068
        public static let error = 2072
        /// Bytes the structure occupies.
        public static let size = 2076
    }

    /// io/xs_wire.h: XENSTORE_SERVER_FEATURE_* bits.
    public struct ServerFeatures: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// XENSTORE_SERVER_FEATURE_RECONNECTION
        public static let reconnection = ServerFeatures(rawValue: 1)
        /// XENSTORE_SERVER_FEATURE_ERROR
        public static let error = ServerFeatures(rawValue: 2)
    }

    /// io/xs_wire.h: XENSTORE_CONNECTED / XENSTORE_RECONNECT.
    public enum Connection: UInt32, Sendable {
        case connected = 0
        case reconnect = 1
    }

    /// io/xs_wire.h: XENSTORE_ERROR_*.
    public enum RingErrorCode: UInt32, Sendable {
        case none = 0
        case communication = 1
        case ringIndex = 2
        case protocolViolation = 3
    }

    @usableFromInline let memory: SharedView
    /// Guest to xenstored.
    public let requests: ByteRing
    /// xenstored to guest: replies and watch events.
    public let responses: ByteRing

    /// Lays the interface over `memory` (one page, or at least ``Layout/size`` bytes).
    public init(memory: SharedView) throws(RingError) {
        guard memory.count >= Layout.size else { throw .memoryTooSmall(bytes: memory.count, needed: Layout.size) }
        self.memory = memory
        requests = try ByteRing(memory: memory, dataOffset: Layout.requests, size: Layout.ringSize,
                                consumerOffset: Layout.requestConsumer, producerOffset: Layout.requestProducer)
        responses = try ByteRing(memory: memory, dataOffset: Layout.responses, size: Layout.ringSize,
                                 consumerOffset: Layout.responseConsumer, producerOffset: Layout.responseProducer)
    }

    /// The server_features word as last written by xenstored.
    public var serverFeatures: ServerFeatures {
        get { ServerFeatures(rawValue: memory.atomicLoad32(at: Layout.serverFeatures, ordering: .acquiring)) }
        nonmutating set { memory.atomicStore32(newValue.rawValue, at: Layout.serverFeatures, ordering: .releasing) }
    }

    /// The connection word, as a raw value (the peer may write anything).
    public var connectionRaw: UInt32 {
        get { memory.atomicLoad32(at: Layout.connection, ordering: .acquiring) }
        nonmutating set { memory.atomicStore32(newValue, at: Layout.connection, ordering: .releasing) }
    }

    /// The error word, as a raw value (the peer may write anything).
    public var errorRaw: UInt32 {
        get { memory.atomicLoad32(at: Layout.error, ordering: .acquiring) }
        nonmutating set { memory.atomicStore32(newValue, at: Layout.error, ordering: .releasing) }
    }
}

/// The PV console page (io/console.h: struct xencons_interface).
public struct ConsoleRingInterface: Sendable {
    /// Byte offsets within the page.
    public enum Layout {
        public static let input = 0
        public static let inputSize = 1024
        public static let output = 1024
        public static let outputSize = 2048
        public static let inputConsumer = 3072
        public static let inputProducer = 3076
        public static let outputConsumer = 3080
        public static let outputProducer = 3084
        /// Bytes the structure occupies.
        public static let size = 3088
    }

    /// Backend to guest (keyboard input).
    public let input: ByteRing
    /// Guest to backend (console output).
    public let output: ByteRing

    /// Lays the interface over `memory`.
    public init(memory: SharedView) throws(RingError) {
        guard memory.count >= Layout.size else { throw .memoryTooSmall(bytes: memory.count, needed: Layout.size) }
        input = try ByteRing(memory: memory, dataOffset: Layout.input, size: Layout.inputSize,
                             consumerOffset: Layout.inputConsumer, producerOffset: Layout.inputProducer)
        output = try ByteRing(memory: memory, dataOffset: Layout.output, size: Layout.outputSize,
                              consumerOffset: Layout.outputConsumer, producerOffset: Layout.outputProducer)
    }
}
