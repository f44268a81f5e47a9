/// A byte stream to xenstored. The client sends whole messages and reads whatever
/// arrives on one reader thread.
public protocol XenStoreTransport: AnyObject, Sendable {
    /// Sends every byte, blocking while the stream is full.
    func send(_ bytes: [UInt8]) throws(XenStoreError)
    /// Blocks until bytes arrive and copies up to `buffer.count` of them; 0 means the
    /// stream ended (closed by either side).
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int
    /// Ends the stream; a blocked ``receive(into:)`` returns 0.
    func close()
}
