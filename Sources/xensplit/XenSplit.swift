import ArgumentParser

/// `xensplit`: one binary, every subcommand a thin layer over the library.
@main
struct XenSplit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xensplit",
        abstract: "Xen split-device drivers in userspace, on real Xen or on a local hypervisor.",
        subcommands: [HypervisorCommand.self, DomainCommand.self, XenstoredCommand.self, BlkbackCommand.self, BlkfrontCommand.self,
                      NetbackCommand.self, NetfrontCommand.self, BackendCommand.self, ConformanceCommand.self,
                      DemoCommand.self, SelfTestCommand.self]
    )
}
