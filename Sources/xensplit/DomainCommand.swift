import ArgumentParser
import XenLocal

/// `xensplit domain create|list|destroy`: the local toolstack.
struct DomainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domain",
        abstract: "Create, list and destroy local domains (the toolstack, like xl).",
        subcommands: [Create.self, List.self, Destroy.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a domain and its xenstore home /local/domain/ID.")
        @OptionGroup var state: StateDirectoryOptions
        @Argument(help: "Domain name: letters, digits, '-', '_', '.'.")
        var name: String

        func run() async throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            let id = try await LocalToolstack(platform: platform).createDomain(name: name)
            print("created domain \(name) with id \(id)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List domains: id and name.")
        @OptionGroup var state: StateDirectoryOptions

        func run() throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            print("ID\tName")
            for d in try platform.listDomains() { print("\(d.id)\t\(d.name)") }
        }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a domain: its grants, memory, ports, connections and xenstore nodes.")
        @OptionGroup var state: StateDirectoryOptions
        @Argument(help: "Domain name.")
        var name: String

        func run() throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            try LocalToolstack(platform: platform).destroyDomain(name: name)
            print("destroyed domain \(name)")
        }
    }
}
