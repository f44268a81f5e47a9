// The sanitizer canary: one deliberate bug, chosen by the argument, that scripts/sanitize.sh
// runs before the tests to prove the sanitizer it built with is really active. A build
// without the sanitizer runs the bug silently (or crashes some other way), and the script
// fails when the sanitizer's own report does not appear.
//   heap-overflow: one byte written past a 16-byte heap block (AddressSanitizer's report).
//   data-race: two threads write one word with nothing ordering them (ThreadSanitizer's).
import Glibc

/// The word both threads of `data-race` write; shared without any synchronisation on purpose.
nonisolated(unsafe) var racedWord = 0

/// Writes `racedWord` from a new thread, with no lock, atomic or join before the write.
func writeFromThread() -> pthread_t {
    var thread = pthread_t()
    let created = pthread_create(&thread, nil, { _ in
        racedWord += 1
        return nil
    }, nil)
    precondition(created == 0, "pthread_create failed: \(created)")
    return thread
}

switch CommandLine.arguments.dropFirst().first {
case "heap-overflow":
    let block = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
    // The index comes from the argument count so no optimiser can see it is out of bounds.
    let past = 16 + CommandLine.arguments.count - 2
    block[past] = 1
    print("heap-overflow: wrote byte \(past) of a 16-byte block, unreported")
    block.deallocate()
case "data-race":
    let first = writeFromThread()
    let second = writeFromThread()
    pthread_join(first, nil)
    pthread_join(second, nil)
    print("data-race: two unsynchronised writes, unreported (value \(racedWord))")
default:
    print("usage: sanitizer-canary heap-overflow|data-race")
    exit(2)
}
