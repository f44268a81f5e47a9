// URing's errors and completions carry the Errno of SystemCalls, the module that also holds
// the one EINTR-retrying call wrapper; re-exported so URing's users name it without
// importing another module.
@_exported import SystemCalls
