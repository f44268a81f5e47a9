import Glibc

/// A joinable thread running a closure.
struct JoinableThread: @unchecked Sendable {
    // SAFETY: the handle is only joined once, by the owner that created it.
    private let handle: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping @Sendable () -> Void) throws(XenStoreError) {
        var handle = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let r = pthread_create(&handle, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<Box>.fromOpaque(arg).takeRetainedValue().body()
            return nil
        }, box)
        guard r == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw .systemCall("pthread_create", errno: r)
        }
        self.handle = handle
    }

    func join() {
        pthread_join(handle, nil)
    }
}
