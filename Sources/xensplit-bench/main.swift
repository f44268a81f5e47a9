import Glibc

// Temporary dispatch until the lead's rewrite: `xensplit-bench uring` runs UringBench.swift.
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "uring" {
    do {
        try runUringBench(arguments: Array(CommandLine.arguments.dropFirst(2)))
    } catch {
        print("xensplit-bench uring: \(error)")
        exit(1)
    }
} else {
    print("xensplit-bench: nothing yet")
}
