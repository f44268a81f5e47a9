import ArgumentParser

// Temporary root command until the lead merges the real one.
struct XenSplit: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "xensplit", subcommands: [XenstoredCommand.self])
}

XenSplit.main()
