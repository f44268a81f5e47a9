import Synchronization

/// Operations submitted and not yet taken by the I/O thread: a lock-free stack that any
/// number of submitters push to and the thread empties whole, so a request costs its
/// submitter one compare-and-exchange instead of the frontend's mutex.
///
/// Only whole-stack exchanges take from it, never single pops, so the ABA problem of
/// such stacks cannot arise. Each entry holds a retain of its operation, given back by
/// ``takeAll(into:)``.
final class BlockFrontendSubmissions: Sendable {
    /// The address of the operation pushed last (retained), or 0; linked through
    /// ``BlockFrontendOperation/nextSubmitted``. An integer, as atomics of pointers are
    /// not Sendable.
    private let top = Atomic<UInt>(0)

    deinit {
        var taken: [BlockFrontendOperation] = []
        takeAll(into: &taken)
    }

    /// Pushes `operation`. Sequentially consistent, so a submitter that then finds the
    /// thread not sleeping knows the thread's next look will see this.
    func push(_ operation: BlockFrontendOperation) {
        let entry = UInt(bitPattern: Unmanaged.passRetained(operation).toOpaque())
        var head = top.load(ordering: .relaxed)
        while true {
            operation.nextSubmitted = UnsafeMutableRawPointer(bitPattern: head)
            let (exchanged, current) = top.compareExchange(expected: head, desired: entry,
                                                           ordering: .sequentiallyConsistent)
            if exchanged { return }
            head = current
        }
    }

    /// Whether anything was pushed and not yet taken (a push may land just after).
    /// Sequentially consistent, as the I/O thread's look at the stack before it sleeps
    /// pairs with a submitter's push (a plain load on x86, as relaxed would be).
    var isEmpty: Bool { top.load(ordering: .sequentiallyConsistent) == 0 }

    /// Appends every operation pushed so far to `batch`, oldest first.
    func takeAll(into batch: inout [BlockFrontendOperation]) {
        takeAll(into: &batch) { $0 }
    }

    /// Appends what `make` makes of every operation pushed so far to `batch`, oldest first.
    func takeAll<Item>(into batch: inout [Item], _ make: (BlockFrontendOperation) -> Item) {
        // A plain load first: an exchange on an empty stack would still take its cache
        // line from the submitters.
        guard !isEmpty, var entry = UnsafeMutableRawPointer(bitPattern: top.exchange(0, ordering: .sequentiallyConsistent)) else {
            return
        }
        let start = batch.count
        while true {
            // SAFETY: every entry was made by passRetained in push() and is taken once,
            // here, after the exchange above removed the whole chain from the stack; the
            // pusher wrote `nextSubmitted` before its releasing exchange published it.
            let operation = Unmanaged<BlockFrontendOperation>.fromOpaque(entry).takeRetainedValue()
            let next = operation.nextSubmitted
            operation.nextSubmitted = nil
            batch.append(make(operation))
            guard let next else { break }
            entry = next
        }
        // The stack gave them newest first; reversed in place (a slice's reverse() copies).
        var low = start
        var high = batch.count - 1
        while low < high {
            batch.swapAt(low, high)
            low += 1
            high -= 1
        }
    }
}
